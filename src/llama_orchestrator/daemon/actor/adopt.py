"""Re-adoption at daemon start: find a recorded server again, from its record alone."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from llama_orchestrator.config.loader import (
    ConfigError,
    LoadedConfig,
    UnknownInstance,
    load_instance,
)
from llama_orchestrator.daemon.actor.context import ActorContext
from llama_orchestrator.daemon.actor.preflight import memory_mb
from llama_orchestrator.daemon.events import EventKind
from llama_orchestrator.daemon.scheduler import Claim
from llama_orchestrator.engine.command import base_url, log_paths
from llama_orchestrator.engine.process import ServerProcess


def adopt_recorded(
    ctx: ActorContext, name: str, row: dict[str, Any]
) -> tuple[ServerProcess, LoadedConfig | None, str | None, Path | None] | None:
    """The recorded server if its PID is still that very process, with what is known of it.

    The process is watched from its record alone: a config that no longer loads only
    blocks the next start (a dead adopted server must never look healthy). The URL
    comes from the record (the host and port it was started with), not from the
    config, which may have changed or no longer load; the config is only used for the
    health check settings and the log path when it still loads.
    """
    if not (row.get("pid") and row.get("pid_create_time") and row.get("cmdline")):
        return None
    proc = ctx.launcher.adopt(int(row["pid"]), float(row["pid_create_time"]), list(row["cmdline"]))
    if proc is None:
        return None
    loaded = None
    with contextlib.suppress(ConfigError, UnknownInstance):
        loaded = load_instance(ctx.home, name)
    url = None
    if row.get("host") and row.get("port"):
        url = base_url(str(row["host"]), int(row["port"]))
    elif loaded is not None:
        url = base_url(loaded.config.server.host, loaded.config.server.port)
    stderr = log_paths(loaded, ctx.home.root)[1] if loaded is not None else None
    ctx.bus.emit(name, EventKind.ADOPTED, None, str(proc.pid), "re-adopted after daemon start")
    return proc, loaded, url, stderr


def held_claim(name: str, row: dict[str, Any], loaded: LoadedConfig | None) -> Claim:
    """What an adopted server holds: it runs already, so it is admitted past any budget."""
    where = (str(row["host"]), int(row["port"])) if row.get("port") else None
    return Claim(name, where, memory_mb(loaded) if loaded else {}, force=True)
