"""What ``ps``, the dashboard and other readers show: one row per instance.

Built from the state records (so it works while the daemon is down) plus the configs of
instances that never ran. Reads only; cheap imports, since ``ps`` must start fast.
"""

from __future__ import annotations

import json
import time
from typing import Any

from llama_orchestrator.engine.states import ALIVE, Health, State
from llama_orchestrator.home import Home
from llama_orchestrator.state.rows import instance_status


def _raw_config(home: Home, name: str) -> dict[str, Any]:
    """Display fields of a config that never ran, read without full validation."""
    try:
        data = json.loads(home.config_path(name).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def instance_rows(home: Home) -> list[dict[str, Any]]:
    from llama_orchestrator.state.db import StateStore

    store = StateStore.open_for_reading(home.db_path)
    records: dict[str, dict[str, Any]] = {}
    if store is not None:
        try:
            records = {r["name"]: r for r in store.all()}
        finally:
            store.close()
    now = time.time()
    rows = []
    defined = set(home.instance_names())
    for name in sorted(defined | set(records)):
        record = records.get(name)
        if record is None:
            raw = _raw_config(home, name)
            server, gpu = raw.get("server") or {}, raw.get("gpu") or {}
            backend = gpu.get("backend", "cpu")
            record = {
                "port": server.get("port"),
                "backend": backend,
                "device": "-" if backend == "cpu" else f"GPU:{gpu.get('device_id', 0)}",
                "model": (raw.get("model") or {}).get("path"),
            }
        s = instance_status(name, record)
        alive = s["status"] in ALIVE and s["start_time"]
        model = s["model"] or ""
        rows.append(
            {
                "name": name,
                "pid": s["pid"],
                "port": s["port"],
                "backend": s["backend"],
                "device": s["device"],
                "model": model.replace("\\", "/").rsplit("/", 1)[-1].removesuffix(".gguf"),
                "status": s["status"],
                "health": s["health"],
                "uptime_s": round(now - s["start_time"], 1) if alive else None,
                "restarts": s["restart_count"],
                "desired": s["desired"],
                "defined": name in defined,
                "last_error": s["last_error"],
            }
        )
    return rows


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
