"""What the dashboard reads and does, as plain blocking functions for its thread workers.

No Textual here: every function may touch SQLite, log files or the daemon's HTTP API,
so the app only ever calls them from thread workers (never on the UI thread).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llama_orchestrator.client.control import DaemonStatus, connect, daemon_status
from llama_orchestrator.home import Home
from llama_orchestrator.views.rows import instance_rows

LOG_TAIL_LINES = 50
# The daemon's verbs, and the CLI command to suggest when there is no daemon to ask.
VERBS = {"up": "start", "down": "stop", "restart": "restart"}
# stop waits up to server.stop_timeout, restart also for /health 200 (start_period).
ACTION_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Snapshot:
    rows: list[dict[str, Any]] | None  # None: the records could not be read this time
    daemon: DaemonStatus
    error: str | None = None


def take_snapshot(home: Home) -> Snapshot:
    """The ps rows and the daemon's state; never raises (the dashboard keeps retrying)."""
    try:
        daemon = daemon_status(home)
    except Exception:  # a garbled pid file or a psutil hiccup: show "not running", retry
        daemon = DaemonStatus(False)
    try:
        return Snapshot(instance_rows(home), daemon)
    except Exception as e:  # SQLite busy or damaged, a config folder vanishing mid-read
        return Snapshot(None, daemon, f"cannot read the records: {e}")


def stderr_log(home: Home, name: str) -> Path:
    """The instance's stderr log as its config names it (default logs/<name>/stderr.log)."""
    from llama_orchestrator.config.loader import ConfigError, UnknownInstance, load_instance
    from llama_orchestrator.engine.command import log_paths

    try:
        return log_paths(load_instance(home, name), home.root)[1]
    except (ConfigError, UnknownInstance, OSError):
        return home.logs_dir / name / "stderr.log"


def log_tail(path: Path, n: int = LOG_TAIL_LINES) -> list[str]:
    from llama_orchestrator.engine.process import tail_lines

    return tail_lines(path, n)


def act(
    home: Home, name: str, command: str, on_daemon_start: Callable[[], None] | None = None
) -> tuple[bool, str]:
    """Ask the daemon to start (without waiting), stop or restart ``name``.

    Only ``up`` starts a daemon when none runs, as ``llama-orch up`` does; ``down`` and
    ``restart`` need one already. Returns (ok, message for a notification).
    """
    from llama_orchestrator.client.control import DaemonError, ensure_daemon

    verb = VERBS[command]
    try:
        client = connect(home)
    except DaemonError as e:  # the daemon runs but its token file is gone (issue 10)
        return False, str(e)
    note = ""
    if client is None:
        if command != "up":
            hint = f"`llama-orch {command} {name}` starts one"
            return False, f"daemon not running: cannot {verb} {name} here ({hint})"
        if on_daemon_start is not None:
            on_daemon_start()
        try:
            client, started = ensure_daemon(home)
        except DaemonError as e:
            return False, str(e)
        note = "started the daemon; " if started else ""
    params = {"wait": False} if command == "up" else None
    try:
        reply = client.post(f"/v1/instances/{name}/{verb}", params=params, timeout=ACTION_TIMEOUT_S)
    except OSError as e:
        return False, f"{name}: lost the daemon ({e})"
    body = reply.body if isinstance(reply.body, dict) else {}
    ok = reply.ok and body.get("ok") is not False
    message = body.get("message") or body.get("detail") or f"HTTP {reply.status}"
    return ok, f"{note}{name}: {message}"


def describe_text(home: Home, name: str) -> str:
    """``llama-orch describe NAME`` as text, or why it cannot be described."""
    from llama_orchestrator.config.loader import ConfigError, UnknownInstance
    from llama_orchestrator.views.describe import describe_data
    from llama_orchestrator.views.describe_text import render_describe

    try:
        return render_describe(describe_data(home, name))
    except UnknownInstance as e:
        return str(e)
    except ConfigError as e:
        return f"{name}: invalid config\n{e}"
