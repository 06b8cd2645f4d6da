"""The client side of the daemon: is it running, start it, talk to it.

The CLI is a thin client: it finds the daemon through ``state/daemon.json`` (address)
and ``state/token`` (bearer token), and starts the daemon when a command needs it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llama_orchestrator.errors import OrchestratorError
from llama_orchestrator.home import Home, HomeError

if TYPE_CHECKING:
    import subprocess

    from llama_orchestrator.engine.platform import Platform

START_TIMEOUT_S = 20.0
EXIT_BOOT_FAILED = 4  # the keeper's code when its first daemon died before it listened


class DaemonError(OrchestratorError, RuntimeError):
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


def proc_start_ticks(pid: int) -> int | None:
    """Linux: a process's start time in clock ticks since boot (/proc/PID/stat field 22).

    With the PID it identifies a process exactly, and reading it costs far less than
    importing psutil, which matters to ``ps``. None where /proc is not available.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()  # the name may hold spaces and ')'
    if fields[0] == b"Z":
        return None  # a zombie is not a live daemon
    return int(fields[19])


def _alive(pid: int, create_time: float, start_ticks: Any = None) -> bool:
    if isinstance(start_ticks, int) and os.path.isdir("/proc"):
        return proc_start_ticks(pid) == start_ticks
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
    if not _alive(pid, ctime, pid_info.get("start_ticks")):
        return DaemonStatus(False, pid, None, stale_pid_file=True)
    endpoint = _read_json(home.daemon_endpoint_path) or {}
    url = endpoint.get("url") if endpoint.get("pid") == pid else None
    return DaemonStatus(True, pid, url)


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any  # decoded JSON, or the raw text when the body is not JSON

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class Client:
    """Bearer-token client of one daemon's control API.

    The standard library's http.client on purpose: the CLI pays for every import on
    every command, and this loopback JSON API needs nothing more.
    """

    def __init__(self, url: str, token: str, timeout: float = 600.0) -> None:
        from urllib.parse import urlsplit

        parsed = urlsplit(url)
        self.url = url
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 80
        self.token = token
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Reply:
        """One request on a fresh connection (safe to call from several threads)."""
        import http.client
        from urllib.parse import urlencode

        if params:
            path += "?" + urlencode(
                {k: str(v).lower() if isinstance(v, bool) else v for k, v in params.items()}
            )
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout or self.timeout)
        try:
            conn.request(method, path, headers={"Authorization": f"Bearer {self.token}"})
            resp = conn.getresponse()
            raw = resp.read().decode("utf-8", "replace")
        finally:
            conn.close()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw
        return Reply(resp.status, body)

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Reply:
        return self.request("POST", path, **kw)


class TokenError(DaemonError):
    """The daemon runs but this client cannot authenticate to it (issue 10, item 13).

    The daemon holds its token in memory, so writing a new file would not help: the
    only recovery is a daemon restart, which leaves the servers running.
    """


RECOVER = "`llama-orch daemon stop` (its servers keep running), then run the command again"


def read_token(home: Home, status: DaemonStatus) -> str:
    """The bearer token of the running daemon ``status`` describes; raises TokenError."""
    path = home.token_path
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = ""
    except OSError as e:
        raise TokenError(
            f"the daemon runs (pid {status.pid}) but its token file {path} is unreadable "
            f"({e.strerror or e}); fix its permissions, or {RECOVER}"
        ) from None
    if not token:
        raise TokenError(
            f"the daemon runs (pid {status.pid}) but its token file {path} is missing or "
            f"empty; {RECOVER}"
        )
    return token


def connect(home: Home) -> Client | None:
    """A client of the running daemon; None when none runs. Raises TokenError when one
    runs whose token cannot be read."""
    status = daemon_status(home)
    if not status.running or not status.url:
        return None
    return Client(status.url, read_token(home, status))


def _spawn_daemon(home: Home, *, platform: Platform | None = None) -> subprocess.Popen[bytes]:
    """Start a daemon (its keeper) in the background (it may lose the race for the lock
    to another one and exit)."""
    import subprocess

    from llama_orchestrator.engine.platform import current_platform

    try:
        home.ensure()
        log = open(home.daemon_log_path, "ab")  # noqa: SIM115 (closed below)
    except HomeError as e:  # a file where one of the home's folders goes (issue 19)
        raise DaemonError(str(e)) from None
    except OSError as e:
        why = f"{e.strerror or e}: move it aside or remove it"
        raise DaemonError(f"cannot write the daemon's log {home.daemon_log_path} ({why})") from None
    # POSIX: a session of its own. Windows: a process group and a hidden console of its
    # own (not DETACHED_PROCESS: its servers share its console to receive CTRL_BREAK).
    kwargs: dict[str, Any] = (platform or current_platform()).daemon_spawn_kwargs()
    with log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_orchestrator", "--home", str(home.root), "daemon", "run"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            close_fds=True,
            **kwargs,
        )
    return proc


def ensure_daemon(home: Home, timeout: float = START_TIMEOUT_S) -> tuple[Client, bool]:
    """A client of the running daemon, starting one if needed. Returns (client, started).

    Safe under concurrency: several CLIs may each spawn a daemon, the lock lets exactly
    one of them run, and every CLI waits for whichever won; ``started`` is True only for
    the CLI whose daemon won (issue 10). A daemon that runs but refuses this client
    (its token file missing or replaced) raises TokenError at once.
    """
    client = connect(home)
    if client is not None and _answers(client, home):
        return client, False
    proc = _spawn_daemon(home)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        client = connect(home)
        if client is not None and _answers(client, home):
            return client, _started_by(home, proc.pid)
        if proc.poll() == EXIT_BOOT_FAILED:  # not a 20 s wait for a daemon that died
            raise DaemonError(f"the daemon failed to start:\n{_log_tail(home)}")
        time.sleep(0.02)
    raise DaemonError(f"the daemon did not start within {timeout:.0f}s; see {home.daemon_log_path}")


def _log_tail(home: Home, lines: int = 15) -> str:
    try:
        with open(home.daemon_log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            tail = f.read().decode("utf-8", "replace").splitlines()[-lines:]
    except OSError as e:
        return f"(cannot read {home.daemon_log_path}: {e})"
    return "\n".join(tail) + f"\n(the end of {home.daemon_log_path})"


def _started_by(home: Home, spawned: int) -> bool:
    """The daemon that answers runs under the keeper this CLI spawned (or is it)."""
    keeper = _read_json(keeper_path(home)) or {}
    return spawned in (keeper.get("pid"), daemon_status(home).pid)


def _answers(client: Client, home: Home) -> bool:
    """The daemon answers; raises TokenError when it refuses our token."""
    try:
        reply = client.get("/v1/daemon", timeout=2)
    except OSError:
        return False
    if reply.status == 401:
        raise TokenError(
            f"the daemon at {client.url} does not accept the token in {home.token_path} "
            f"(the file was replaced since it started); {RECOVER}"
        )
    return reply.ok


def keeper_path(home: Home) -> Path:
    """Where the daemon's keeper (daemon/keeper.py) writes its identity."""
    return home.daemon_pid_path.with_name("keeper.json")


def _keeper(home: Home) -> Any:
    """The daemon's keeper as a psutil.Process, or None when none runs."""
    info = _read_json(keeper_path(home))
    if info is None:
        return None
    pid, ctime = info.get("pid"), info.get("create_time")
    if not isinstance(pid, int) or not isinstance(ctime, (int, float)) or pid <= 0:
        return None
    if not _alive(pid, ctime):
        return None
    return _process(pid)


def keeper_alive(home: Home) -> bool:
    return _keeper(home) is not None


def _process(pid: int | None) -> Any:
    import psutil

    try:
        return psutil.Process(pid) if pid is not None else None
    except psutil.Error:
        return None


def stop_daemon(home: Home, timeout: float = 15.0) -> bool:
    """Stop the daemon and its keeper (its servers keep running). True if one was stopped.

    The keeper is told first, so it does not start the daemon again: on POSIX its SIGTERM
    reaches the daemon too (the daemon's own SIGTERM path, as the shutdown request takes).
    """
    status = daemon_status(home)
    keeper = _keeper(home)
    worker = _process(status.pid) if status.running else None
    if worker is None and keeper is None:
        return False
    if keeper is not None:
        keeper.terminate()
    if worker is not None:
        if keeper is None or os.name == "nt":  # Windows: terminate() is a hard kill
            _ask_to_exit(home, worker)
        if not _wait_exited(worker, timeout):
            worker.kill()
            _wait_exited(worker, 5)
    if keeper is not None and not _wait_exited(keeper, 5):
        keeper.kill()
        _wait_exited(keeper, 5)
    return True


def _ask_to_exit(home: Home, worker: Any) -> None:
    """The shutdown request, or SIGTERM when the daemon cannot be asked."""
    try:
        client = connect(home)
    except TokenError:
        client = None  # SIGTERM takes the same path as the shutdown request
    asked = False
    if client is not None:
        try:
            asked = client.post("/v1/daemon/shutdown", timeout=5).ok
        except OSError:
            asked = False
    if not asked:
        worker.terminate()


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
