"""The gateway's side of hot reload (issue 11): new settings without a new listener.

``gateway.json`` (and its ``api_keys_file``) is rescanned with the instance configs
(daemon/reload.py). Keys, queue limits, ``load_timeout`` and the budgets apply at once,
to the gateway that listens: its connections and the requests in flight are kept. The
address (``host``, ``port``), ``enabled`` and ``max_body_mb`` (the size every open
connection was accepted with) take effect at the next daemon start; the event says so.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from llama_orchestrator.config.gateway import is_loopback
from llama_orchestrator.gateway.app import Gateway
from llama_orchestrator.gateway.settings import GatewaySettings
from llama_orchestrator.state.drift import config_hash

RESTART_HINT = "`llama-orch daemon stop`, then any command, starts the daemon again"

SourceKey = tuple[str | None, str | None]


def source_key(path: Path, keys_file: Path | None) -> SourceKey:
    """What the gateway's settings are read from, by content: ``gateway.json`` and its
    keys file."""
    return config_hash(path), config_hash(keys_file) if keys_file is not None else None


def settle(
    running: GatewaySettings, new: GatewaySettings
) -> tuple[GatewaySettings | None, list[str]]:
    """The settings a listening gateway can take from ``new``, and what must wait.

    None when they cannot be taken at all: no key left on an address beyond loopback.
    """
    notes = []
    if (new.host, new.port) != (running.host, running.port):
        notes.append(
            f"host and port take effect at the next daemon start (still listening on "
            f"{running.url}; {RESTART_HINT})"
        )
    if new.max_body_bytes != running.max_body_bytes:
        notes.append(f"max_body_mb takes effect at the next daemon start ({RESTART_HINT})")
    kept = dataclasses.replace(
        new, host=running.host, port=running.port, max_body_bytes=running.max_body_bytes
    )
    if not kept.api_keys and not is_loopback(running.host):
        return None, [
            f"refusing to drop every API key while listening on {running.host} "
            "(anyone on the network could use every model); the keys in force are kept"
        ]
    return kept, notes


def retune(gateway: Gateway, settings: GatewaySettings) -> None:
    """Give a listening gateway new settings: the keys checked on the next request, the
    queue limits and timeouts on the next wait."""
    gateway.reconfigure(settings)
