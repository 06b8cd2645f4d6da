"""What ``describe`` shows of a remote instance (issue 13): where it routes, and whether
the key's variable is set where the daemon runs. Never the key itself.

A remote instance has no model file, binary, command line or log files here; its
address and key are the whole of what this machine knows of it. Whether the key is set
is read from the running daemon's own environment (the one that sends it); with no
daemon running, from this process's environment, and the answer says which.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from llama_orchestrator.config.loader import LoadedConfig
from llama_orchestrator.home import Home

Environ = Callable[[Home], "Mapping[str, str] | None"]


def daemon_environ(home: Home) -> Mapping[str, str] | None:
    """The running daemon's environment, or None (not running, or not readable)."""
    import psutil

    from llama_orchestrator.client.control import daemon_status

    status = daemon_status(home)
    if not status.running or status.pid is None:
        return None
    try:
        return dict(psutil.Process(status.pid).environ())
    except (psutil.Error, OSError):
        return None


def remote_data(
    home: Home, loaded: LoadedConfig, environ: Environ = daemon_environ
) -> dict[str, Any] | None:
    """``{"url", "api_key_env", "api_key_set", "api_key_source", "parallel"}``, or None
    for a local instance. ``api_key_source``: "daemon", "this shell" or None (no key)."""
    remote = loaded.remote
    if remote is None:
        return None
    var = remote.api_key_env
    is_set: bool | None = None
    source: str | None = None
    if var is not None:
        env = environ(home)
        source = "daemon" if env is not None else "this shell"
        is_set = bool((os.environ if env is None else env).get(var))
    return {
        "url": remote.url,
        "parallel": remote.parallel,
        "api_key_env": var,
        "api_key_set": is_set,
        "api_key_source": source,
    }


def render_remote(data: Mapping[str, Any]) -> list[str]:
    """The human-readable lines of :func:`remote_data`, aligned as describe's are."""
    var = data.get("api_key_env")
    if var is None:
        key = "none (requests go without a key)"
    else:
        where = (
            "the daemon's environment"
            if data.get("api_key_source") == "daemon"
            else ("this shell's environment (the daemon is not running)")
        )
        key = f"{var} ({'set' if data.get('api_key_set') else 'NOT set'} in {where})"
    return [
        f"{'Remote:':<15} {data['url']} (nothing runs here; down never signals it)",
        f"{'API key:':<15} {key}",
        f"{'Parallel:':<15} {data['parallel']}",
    ]
