"""``llama-orch ps``: filtering and a plain, colour-aware table.

No rich and no Typer here: ``ps`` is the command people run in loops and scripts, so it
has a fast path (cli/fast.py) that imports only this module, the state reader and psutil.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, TextIO

from llama_orchestrator.engine.states import State
from llama_orchestrator.errors import OrchestratorError
from llama_orchestrator.home import Home
from llama_orchestrator.state.views import (
    HEALTH_STYLE,
    STATUS_STYLE,
    format_uptime,
    instance_rows,
    status_label,
)

COLUMNS = (
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
FILTER_KEYS = ("name", "status", "health", "backend", "device", "desired")
_ANSI = {"green": "32", "yellow": "33", "red": "31", "dim": "2"}


class FilterError(OrchestratorError, ValueError):
    pass


def parse_filters(specs: list[str]) -> dict[str, set[str]]:
    """``status=running`` style filters; one key given twice means either value."""
    out: dict[str, set[str]] = {}
    for spec in specs:
        key, sep, value = spec.partition("=")
        if not sep or not value or key not in FILTER_KEYS:
            raise FilterError(
                f"invalid filter {spec!r}: use KEY=VALUE with KEY one of {', '.join(FILTER_KEYS)}"
                " (e.g. --filter status=running)"
            )
        out.setdefault(key, set()).add(value)
    return out


def shows_stopped(all_: bool, filters: dict[str, set[str]]) -> bool:
    """Whether :func:`select` can keep a stopped row (plain ``ps`` hides them)."""
    if "status" in filters:
        return State.STOPPED.value in filters["status"]
    return all_


def select(
    rows: list[dict[str, Any]], all_: bool, filters: dict[str, set[str]]
) -> list[dict[str, Any]]:
    if not shows_stopped(all_, filters):
        rows = [r for r in rows if r["status"] != State.STOPPED]
    return [r for r in rows if all(str(r.get(k)) in v for k, v in filters.items())]


def use_color(stream: TextIO) -> bool:
    return stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def render_table(rows: list[dict[str, Any]], color: bool) -> str:
    cells = [
        [
            r["name"],
            str(r["pid"] or "-"),
            str(r["port"] or "-"),
            r["backend"] or "-",
            r["device"] or "-",
            r["model"] or "-",
            status_label(r),
            r["health"] or "-",
            format_uptime(r["uptime_s"]),
            str(r["restarts"]),
        ]
        for r in rows
    ]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(COLUMNS)]

    def line(values: list[str], styles: list[str | None]) -> str:
        parts = []
        for value, width, style in zip(values, widths, styles, strict=True):
            padded = value.ljust(width)
            if color and style in _ANSI:
                padded = f"\x1b[{_ANSI[style]}m{value}\x1b[0m" + " " * (width - len(value))
            parts.append(padded)
        return "  ".join(parts).rstrip()

    out = [line(list(COLUMNS), [None] * len(COLUMNS))]
    for r, values in zip(rows, cells, strict=True):
        styles: list[str | None] = [None] * len(COLUMNS)
        styles[6] = STATUS_STYLE.get(r["status"])
        styles[7] = HEALTH_STYLE.get(r["health"] or "")
        out.append(line(values, styles))
    return "\n".join(out)


def _meta(home: Home, key: str) -> dict[str, Any]:
    """A JSON object the daemon recorded in the state store's meta table ({}: none)."""
    from llama_orchestrator.state.db import StateStore

    store = StateStore.open_for_reading(home.db_path)
    if store is None:
        return {}
    try:
        raw = store.meta_get(key)
    except Exception:  # an older database without the meta table: nothing to say
        return {}
    finally:
        store.close()
    try:
        found = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def gateway_problem(home: Home) -> str | None:
    """Why the daemon's gateway does not listen, as it recorded (None: it listens)."""
    status = _meta(home, "gateway")
    return None if status.get("listening", True) else str(status.get("reason") or "unknown")


def config_problems(home: Home) -> dict[str, str]:
    """name -> why its config is broken, as the running daemon last scanned it (issue 11:
    it keeps the last good version in force meanwhile)."""
    from llama_orchestrator.state.drift import PROBLEMS_KEY

    return {str(k): str(v) for k, v in _meta(home, PROBLEMS_KEY).items()}


def run_ps(home: Home, *, all_: bool, as_json: bool, quiet: bool, filters: list[str]) -> int:
    """The whole command; returns its exit code."""
    from llama_orchestrator.client.control import daemon_status

    try:
        parsed = parse_filters(filters)
    except FilterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # Without stopped rows, the configs of never-started instances need not be read.
    rows = select(instance_rows(home, stopped=shows_stopped(all_, parsed)), all_, parsed)
    running = daemon_status(home).running
    problems = config_problems(home) if running else {}
    for row in rows:
        row["config_error"] = problems.get(row["name"])
    if not running:
        print("note: the daemon is not running; showing the last recorded state", file=sys.stderr)
    elif not quiet:
        why = gateway_problem(home)
        if why:
            print(f"note: the gateway is not listening: {why}", file=sys.stderr)
        for name, problem in sorted(problems.items()):
            print(
                f"note: {name}: invalid config (the last good one stays in force): {problem}",
                file=sys.stderr,
            )
    if quiet:
        out = "\n".join(r["name"] for r in rows)
    elif as_json:
        out = json.dumps(rows, indent=2)
    else:
        out = render_table(rows, use_color(sys.stdout))
    if out:
        print(out)
    return 0
