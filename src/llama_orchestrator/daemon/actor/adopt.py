"""Re-adoption at daemon start: find a recorded server again, from its record alone."""

from __future__ import annotations

from pathlib import Path

from llama_orchestrator.config.loader import LoadedConfig
from llama_orchestrator.daemon.actor.context import ActorContext
from llama_orchestrator.daemon.actor.preflight import memory_mb
from llama_orchestrator.daemon.actor.snapshot import InstanceSnapshot
from llama_orchestrator.daemon.events import EventKind
from llama_orchestrator.daemon.placement import label_index, placed_config
from llama_orchestrator.daemon.scheduler import Claim
from llama_orchestrator.engine.command import base_url, log_paths
from llama_orchestrator.engine.process import ServerProcess
from llama_orchestrator.state.records import InstanceRecord


def adopt_recorded(
    ctx: ActorContext, name: str, row: InstanceRecord
) -> tuple[ServerProcess, LoadedConfig | None, str | None, Path | None] | None:
    """The recorded server if its PID is still that very process, with what is known of it.

    The process is watched from its record alone: a config that no longer loads only
    blocks the next start (a dead adopted server must never look healthy). The URL
    comes from the record (the host and port it was started with), not from the
    config, which may have changed or no longer load; the config is only used for the
    health check settings and the log path when it still loads.
    """
    recorded = row.process()
    if recorded is None:
        return None
    proc = ctx.launcher.adopt(*recorded)
    if proc is None:
        return None
    loaded = ctx.configs.valid(name)  # read at daemon start (Configs.prime)
    if loaded is not None and loaded.config.gpu.auto:  # where it was placed (issue 7)
        index = label_index(row.device)
        loaded = placed_config(loaded, index) if index is not None else loaded
    url = None
    if row.host and row.port:
        url = base_url(row.host, row.port)
    elif loaded is not None:
        url = base_url(loaded.config.server.host, loaded.config.server.port)
    stderr = log_paths(loaded, ctx.home.root)[1] if loaded is not None else None
    ctx.bus.emit(name, EventKind.ADOPTED, None, str(proc.pid), "re-adopted after daemon start")
    return proc, loaded, url, stderr


def held_claim(name: str, snap: InstanceSnapshot, loaded: LoadedConfig | None) -> Claim:
    """What an adopted server holds: it runs already, so it is admitted past any budget."""
    where = (str(snap.host), snap.port) if snap.port else None
    return Claim(name, where, memory_mb(loaded) if loaded else {}, force=True)
