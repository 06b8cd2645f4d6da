"""The client side of the daemon: is it running, start it, talk to it.

The CLI is a thin client: it finds the daemon through ``state/daemon.json`` (address)
and ``state/token`` (bearer token), and starts the daemon when a command needs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llama_orchestrator.home import Home

if TYPE_CHECKING:
    import httpx

START_TIMEOUT_S = 20.0


class DaemonError(RuntimeError):
    pass


@dataclass(frozen=True)
class DaemonStatus:
    running: bool
    pid: int | None = None
    url: str | None = None
    stale_pid_file: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"running": self.running, "pid": self.pid, "url": self.url}


def _read_json(path: os.PathLike[str]) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _alive(pid: int, create_time: float) -> bool:
    import psutil

    try:
        p = psutil.Process(pid)
        same = abs(p.create_time() - create_time) < 0.05
        return bool(same and p.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def daemon_status(home: Home) -> DaemonStatus:
    """Running only if the recorded PID is alive and is the very process that wrote it."""
    pid_info = _read_json(home.daemon_pid_path)
    if pid_info is None:
        return DaemonStatus(False)
    pid, ctime = pid_info.get("pid"), pid_info.get("create_time")
    if not isinstance(pid, int) or not isinstance(ctime, (int, float)) or pid <= 0:
        return DaemonStatus(False, None, None, stale_pid_file=True)  # garbled: treat as stale
    if not _alive(pid, ctime):
        return DaemonStatus(False, pid, None, stale_pid_file=True)
    endpoint = _read_json(home.daemon_endpoint_path) or {}
    url = endpoint.get("url") if endpoint.get("pid") == pid else None
    return DaemonStatus(True, pid, url)


class Client:
    """Bearer-token HTTP client of one daemon's control API."""

    def __init__(self, url: str, token: str, timeout: float = 600.0) -> None:
        import httpx

        self.url = url
        self._http = httpx.Client(
            base_url=url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            trust_env=False,
        )

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self._http.get(path, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self._http.post(path, **kw)

    def close(self) -> None:
        self._http.close()


def connect(home: Home) -> Client | None:
    status = daemon_status(home)
    if not status.running or not status.url:
        return None
    try:
        token = home.token_path.read_text().strip()
    except OSError:
        return None
    return Client(status.url, token)


def _spawn_daemon(home: Home) -> None:
    home.ensure()
    kwargs: dict[str, Any] = {}
    if os.name == "nt":
        kwargs["creationflags"] = (
            subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
            | subprocess.DETACHED_PROCESS  # type: ignore[attr-defined]
        )
    else:
        kwargs["start_new_session"] = True
    with open(home.daemon_log_path, "ab") as log:
        subprocess.Popen(
            [sys.executable, "-m", "llama_orchestrator", "--home", str(home.root), "daemon", "run"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            close_fds=True,
            **kwargs,
        )


def ensure_daemon(home: Home, timeout: float = START_TIMEOUT_S) -> tuple[Client, bool]:
    """A client of the running daemon, starting one if needed. Returns (client, started).

    Safe under concurrency: several CLIs may each spawn a daemon, the lock lets exactly
    one of them run, and every CLI waits for whichever won.
    """
    client = connect(home)
    if client is not None and _answers(client):
        return client, False
    _spawn_daemon(home)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        client = connect(home)
        if client is not None and _answers(client):
            return client, True
        time.sleep(0.02)
    raise DaemonError(f"the daemon did not start within {timeout:.0f}s; see {home.daemon_log_path}")


def _answers(client: Client) -> bool:
    import httpx

    try:
        return client.get("/v1/daemon", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def stop_daemon(home: Home, timeout: float = 15.0) -> bool:
    """Ask the daemon to exit (its servers keep running). True if one was stopped."""
    import psutil

    status = daemon_status(home)
    if not status.running or status.pid is None:
        return False
    client = connect(home)
    asked = False
    if client is not None:
        try:
            asked = client.post("/v1/daemon/shutdown", timeout=5).status_code == 200
        except Exception:
            asked = False
    proc = psutil.Process(status.pid)
    if not asked:
        proc.terminate()
    if not _wait_exited(proc, timeout):
        proc.kill()
        _wait_exited(proc, 5)
    return True


def _wait_exited(proc: Any, timeout: float) -> bool:
    """Wait until ``proc`` has exited. A zombie counts: its reaping is its new parent's job."""
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False
