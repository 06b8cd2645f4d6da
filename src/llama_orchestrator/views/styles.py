"""How an instance row looks wherever it is shown: the ps columns, each cell's text and
the style of its status and health (``ps``, the dashboard).

Cheap imports only: ``ps``'s fast path uses it. Styles are colour names that the plain
table (views/table.py) turns into ANSI codes and the dashboard hands to rich.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llama_orchestrator.engine.states import Health, State

# The ps table's columns, in order (the dashboard's too).
PS_COLUMNS = (
    "NAME",
    "PID",
    "PORT",
    "BACKEND",
    "DEVICE",
    "MODEL",
    "STATUS",
    "HEALTH",
    "UPTIME",
    "RESTARTS",
)
# The same columns by importance: where the width is short (the dashboard in a narrow
# terminal), columns are dropped from the end of this list first.
PS_PRIORITY = (
    "NAME",
    "STATUS",
    "HEALTH",
    "PORT",
    "UPTIME",
    "PID",
    "RESTARTS",
    "MODEL",
    "DEVICE",
    "BACKEND",
)


# The dashboard's columns: ps's, with MEMORY (estimate/measured, issue 18) after DEVICE;
# where the width is short it goes before MODEL.
DASHBOARD_COLUMNS = (*PS_COLUMNS[:5], "MEMORY", *PS_COLUMNS[5:])
DASHBOARD_PRIORITY = (*PS_PRIORITY[:7], "MEMORY", *PS_PRIORITY[7:])


def _size(mib: Any) -> str:
    if not isinstance(mib, int):
        return "-"
    return f"{mib / 1024:.1f}G" if mib >= 1024 else f"{mib}M"


def memory_cell(row: Mapping[str, Any]) -> str:
    """The MEMORY cell: its run's estimate/measured on its GPU (else on the host), as
    ``ps --json``'s ``memory`` has them; ``?`` for a measurement whose source failed
    (the estimate holds), ``-`` for what is not known yet."""
    memory: Mapping[str, Any] = row.get("memory") or {}
    if not memory:
        return "-"
    device = next((d for d in memory if d != "cpu"), "cpu")
    m = memory[device] or {}
    seen = "?" if m.get("unavailable") else _size(m.get("measured_mb"))
    return f"{_size(m.get('estimate_mb'))}/{seen}"


def dashboard_cells(row: Mapping[str, Any]) -> dict[str, str]:
    """One row as the text of each of :data:`DASHBOARD_COLUMNS`."""
    cells = ps_cells(row)
    cells["MEMORY"] = memory_cell(row)
    return {col: cells[col] for col in DASHBOARD_COLUMNS}


def ps_cells(row: Mapping[str, Any]) -> dict[str, str]:
    """One ps row (views/rows.py) as the text of each of :data:`PS_COLUMNS`."""
    return {
        "NAME": str(row["name"]),
        "PID": str(row.get("pid") or "-"),
        "PORT": str(row.get("port") or "-"),
        "BACKEND": row.get("backend") or "-",
        "DEVICE": row.get("device") or "-",
        "MODEL": row.get("model") or "-",
        "STATUS": status_label(row),
        "HEALTH": row.get("health") or "-",
        "UPTIME": format_uptime(row.get("uptime_s")),
        "RESTARTS": str(row.get("restarts", 0)),
    }


def cell_style(column: str, row: Mapping[str, Any]) -> str | None:
    """The colour of ``row``'s cell in ``column`` (None: plain)."""
    if column == "STATUS":
        return STATUS_STYLE.get(row["status"])
    if column == "HEALTH":
        return HEALTH_STYLE.get(row.get("health") or "")
    return None


def status_label(row: Mapping[str, Any]) -> str:
    """The STATUS cell: the state, and "(config removed)" for a record without a config
    or "(config changed)" for a server started with another config than the file's."""
    if row.get("config_removed"):
        return f"{row['status']} (config removed)"
    if row.get("config_changed"):
        return f"{row['status']} (config changed)"
    return str(row["status"])


def format_uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


STATUS_STYLE = {
    State.RUNNING.value: "green",
    State.STARTING.value: "yellow",
    State.BACKOFF.value: "yellow",
    State.STOPPING.value: "yellow",
    State.EXITED.value: "red",
    State.FATAL.value: "red",
    State.STOPPED.value: "dim",
}
HEALTH_STYLE = {
    Health.HEALTHY.value: "green",
    Health.LOADING.value: "yellow",
    Health.UNHEALTHY.value: "red",
    Health.ERROR.value: "red",
}
