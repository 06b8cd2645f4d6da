"""Server processes: spawn in their own group, watch for exit, stop the group, reap.

Two kinds of handle share one interface:

* ``ChildProcess``: spawned by this daemon. Its exit is observed without reaping
  (pidfd on Linux, ``waitid(WNOWAIT)`` in a thread on other POSIX systems, the
  process handle on Windows), so its PID cannot be reused while we may still signal its
  group; ``reap()`` collects the status afterwards.
* ``AdoptedProcess``: found running after a daemon restart. It is not our child, so
  every signal is preceded by an identity check (create time and command line): a PID
  that now belongs to someone else is never signalled.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

import psutil

from llama_orchestrator.engine.command import LaunchSpec
from llama_orchestrator.engine.platform import Platform, current_platform
from llama_orchestrator.engine.sockets import listens_on

log = logging.getLogger("llama_orchestrator.engine")
# create_time is a float derived from /proc ticks; allow rounding between readers.
_CREATE_TIME_SLACK = 0.05
# The exit code of a Windows process that a console control event ended (ExitProcess in
# the default handler): what llama-server exits with on CTRL_BREAK.
_STATUS_CONTROL_C_EXIT = 0xC000013A


@dataclass(frozen=True)
class Identity:
    pid: int
    create_time: float
    cmdline: list[str]

    def matches_live(self) -> bool:
        """True when ``pid`` is still the very process recorded (not a reused PID)."""
        try:
            p = psutil.Process(self.pid)
            if abs(p.create_time() - self.create_time) > _CREATE_TIME_SLACK:
                return False
            if p.status() == psutil.STATUS_ZOMBIE:
                return False
            return command_matches(p.cmdline(), self.cmdline)
        except (psutil.Error, OSError):
            return False


def command_matches(live: list[str], recorded: list[str]) -> bool:
    """Does a live command line belong to the recorded argv?

    Equal, or, for a script run through its ``#!`` interpreter or a wrapper that
    ``exec``s the server, the recorded arguments after argv[0] end the live command line.
    PID and create time already pin the process; this guards against a reused PID whose
    create time happens to match.
    """
    if live == recorded:
        return True
    tail = recorded[1:]
    return bool(tail) and len(live) > len(tail) and live[-len(tail) :] == tail


@dataclass(frozen=True)
class ExitStatus:
    code: int | None  # exit code, None when killed by a signal or unknown
    signal: int | None  # the signal that ended it, if any

    def describe(self) -> str:
        if self.signal is not None:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = str(self.signal)
            return f"killed by {name}"
        if self.code is None:
            return "exited (status unknown: process was adopted)"
        if self.code == _STATUS_CONTROL_C_EXIT:  # Windows: ended by CTRL_BREAK/CTRL_C
            return "exited on CTRL_BREAK (0xC000013A)"
        if self.code > 0xFFFF:  # a Windows NTSTATUS, readable in hex
            return f"exited with code {self.code:#010X}".replace("0X", "0x")
        return f"exited with code {self.code}"

    @classmethod
    def from_returncode(cls, rc: int) -> ExitStatus:
        return cls(None, -rc) if rc < 0 else cls(rc, None)


class ServerProcess:
    """Common interface of a supervised server process.

    What differs between POSIX and Windows (how a group is signalled, what a graceful
    stop and a kill are) is asked of ``platform``, injected by the constructors.
    """

    identity: Identity
    platform: Platform

    @property
    def pid(self) -> int:
        return self.identity.pid

    @property
    def create_time(self) -> float:
        return self.identity.create_time

    def may_signal(self) -> bool:
        """Is ``pid`` still ours to signal (not reaped, not reused)?"""
        raise NotImplementedError

    def listens_on(self, port: int) -> bool | None:
        """Does this server hold the listening socket on ``port``? (None: cannot tell)"""
        return listens_on(self.pid, port)  # engine/sockets.py

    async def wait_exit(self) -> None:  # returns once the process has exited
        raise NotImplementedError

    def has_exited(self) -> bool:
        raise NotImplementedError

    def signal_group(self, sig: int) -> bool:
        raise NotImplementedError

    def reap(self) -> ExitStatus:
        raise NotImplementedError

    def graceful_signal(self) -> bool:
        """SIGTERM (+SIGCONT) to the group; CTRL_BREAK to the console group on Windows."""
        return self.platform.graceful_stop(self)

    def kill(self) -> bool:
        """SIGKILL to the group; a psutil tree kill on Windows."""
        return self.platform.kill(self)

    async def stop(self, grace: float) -> ExitStatus:
        """Graceful signal to the group, wait ``grace`` s, kill the group, wait, reap.

        When the graceful request cannot be delivered at all (the group is gone; on
        Windows, a server that does not share the daemon's console) there is nothing to
        wait for: straight to the kill.
        """
        if not self.has_exited() and self.graceful_signal():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wait_exit(), grace)
        # Kill the whole group even when the leader left on its own: a child it
        # spawned must not outlive it. Safe: the leader is not reaped yet.
        self.kill()
        await asyncio.wait_for(self.wait_exit(), 30)
        return self.reap()


def _pidfd_waiter(pid: int) -> asyncio.Future[None] | None:
    """A future that completes when ``pid`` exits, via pidfd (Linux >= 5.3)."""
    if not hasattr(os, "pidfd_open"):
        return None
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()

    def _ready() -> None:
        loop.remove_reader(fd)
        os.close(fd)
        if not fut.done():
            fut.set_result(None)

    loop.add_reader(fd, _ready)
    return fut


class ChildProcess(ServerProcess):
    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        identity: Identity,
        platform: Platform | None = None,
    ) -> None:
        self.popen = popen
        self.identity = identity
        self.platform = platform or current_platform()
        self._exited = asyncio.get_running_loop().create_future()
        self._status: ExitStatus | None = None
        waiter = _pidfd_waiter(popen.pid)
        if waiter is not None:
            waiter.add_done_callback(lambda _f: self._mark_exited())
        else:
            self._thread_waiter()

    def _thread_waiter(self) -> None:
        loop = asyncio.get_running_loop()
        pid = self.popen.pid

        def wait() -> None:
            self.platform.wait_blocking(self.popen)
            loop.call_soon_threadsafe(self._mark_exited)

        threading.Thread(target=wait, name=f"wait-{pid}", daemon=True).start()

    def _mark_exited(self) -> None:
        if not self._exited.done():
            self._exited.set_result(None)

    async def wait_exit(self) -> None:
        await asyncio.shield(self._exited)

    def has_exited(self) -> bool:
        return self._exited.done() or self._status is not None

    def may_signal(self) -> bool:
        return self._status is None  # reaped: the PID may belong to someone else now

    def signal_group(self, sig: int) -> bool:
        if not self.may_signal():
            return False
        return self.platform.send_group(self.popen.pid, sig)

    def reap(self) -> ExitStatus:
        if self._status is None:
            self._status = ExitStatus.from_returncode(self.popen.wait())
        return self._status


class AdoptedProcess(ServerProcess):
    """A server found running after a daemon restart; identity-checked before any signal."""

    def __init__(
        self, identity: Identity, poll_interval: float = 0.2, platform: Platform | None = None
    ) -> None:
        self.identity = identity
        self.platform = platform or current_platform()
        self._poll = poll_interval
        self._gone = False
        self._exited = asyncio.get_running_loop().create_future()
        waiter = _pidfd_waiter(identity.pid)
        if waiter is not None:
            waiter.add_done_callback(lambda _f: self._mark())
        else:
            asyncio.get_running_loop().create_task(self._poll_loop())

    def _mark(self) -> None:
        self._gone = True
        if not self._exited.done():
            self._exited.set_result(None)

    async def _poll_loop(self) -> None:
        while self.identity.matches_live():
            await asyncio.sleep(self._poll)
        self._mark()

    async def wait_exit(self) -> None:
        await asyncio.shield(self._exited)

    def has_exited(self) -> bool:
        if not self._gone and not self.identity.matches_live():
            self._mark()
        return self._gone

    def may_signal(self) -> bool:
        return self.identity.matches_live()

    def signal_group(self, sig: int) -> bool:
        if not self.may_signal():
            return False
        if self.platform.is_group_leader(self.pid):
            return self.platform.send_group(self.pid, sig)
        return self.platform.send_one(self.pid, sig)  # not the group leader we started

    def reap(self) -> ExitStatus:
        return ExitStatus(None, None)


def adopt(
    pid: int, create_time: float, cmdline: list[str], *, platform: Platform | None = None
) -> AdoptedProcess | None:
    """Adopt a recorded server if and only if the PID is still that very process."""
    ident = Identity(pid, create_time, cmdline)
    return AdoptedProcess(ident, platform=platform) if ident.matches_live() else None


def _marker(spec: LaunchSpec, name: str) -> bytes:
    stamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    # One line, whatever the arguments hold (a multi-line chat template, say).
    command = subprocess.list2cmdline(spec.argv).replace("\r", "\\r").replace("\n", "\\n")
    return f"==== llama-orch: starting {name} at {stamp}: {command}\n".encode()


def _symlinked_log(path: Path) -> OSError:
    why = (
        "it is a symbolic link, and a server's log must be a plain file (rotation "
        "truncates it): remove the link, or set logs.stdout/logs.stderr to the real path"
    )
    return OSError(errno.ELOOP, why, str(path))


def _open_log(path: Path) -> BinaryIO:
    """``path`` opened for appending, never through a symbolic link (issue 10).

    Followed, a link would let the server write, and log rotation truncate, a file
    outside the home. ``O_NOFOLLOW`` refuses it atomically where the system has it;
    elsewhere (Windows) the link is looked for first.
    """
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    if not nofollow and path.is_symlink():
        raise _symlinked_log(path)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | nofollow | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP and path.is_symlink():
            raise _symlinked_log(path) from None
        raise
    return os.fdopen(fd, "ab")


def spawn(
    spec: LaunchSpec,
    name: str,
    *,
    platform: Platform | None = None,
    popen: Callable[..., subprocess.Popen[bytes]] = subprocess.Popen,
) -> ChildProcess:
    """Start a server in its own session/process group with output appended to its logs.

    The server writes straight into its log files (not through a pipe of ours), so it
    keeps running and logging when the daemon dies. ``argv`` goes to ``Popen`` as a
    list, never through a shell: a path with spaces or a drive letter stays one element
    (on Windows ``Popen`` quotes each element with ``subprocess.list2cmdline``).
    """
    return ChildProcess(*open_server(spec, name, platform=platform, popen=popen))


Opened = tuple[subprocess.Popen[bytes], Identity, Platform]


def open_server(
    spec: LaunchSpec,
    name: str,
    *,
    platform: Platform | None = None,
    popen: Callable[..., subprocess.Popen[bytes]] = subprocess.Popen,
) -> Opened:
    """``spawn``'s blocking part (logs opened, ``Popen``, the identity read back): it
    needs no event loop, so the daemon runs it in a thread (issue 17); ``ChildProcess``
    of what it returns is the part that needs the loop."""
    plat = platform or current_platform()
    spec.stdout.parent.mkdir(parents=True, exist_ok=True)
    spec.stderr.parent.mkdir(parents=True, exist_ok=True)
    marker = _marker(spec, name)
    kwargs: dict[str, Any] = plat.spawn_kwargs()
    with _open_log(spec.stdout) as out, _open_log(spec.stderr) as err:
        out.write(marker)
        err.write(marker)
        out.flush()
        err.flush()
        proc = popen(
            list(spec.argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            cwd=spec.cwd,
            env=spec.environ(),
            close_fds=True,
            **kwargs,
        )
    try:
        create_time = psutil.Process(proc.pid).create_time()
    except psutil.Error:
        create_time = time.time()
    return proc, Identity(proc.pid, create_time, list(spec.argv)), plat


def find_marked(home_root: Path) -> dict[str, Identity]:
    """Servers started for ``home_root``, by the marker in their environment.

    Only session leaders count (each server is started in its own session; its children
    inherit the marker but are not servers of ours), and never this process.
    """
    from llama_orchestrator.engine.command import MARKER_HOME, MARKER_INSTANCE

    found: dict[str, Identity] = {}
    root = str(home_root)
    for p in psutil.process_iter(["environ", "cmdline", "create_time"]):
        try:
            env = p.info["environ"] or {}
            if env.get(MARKER_HOME) != root or not env.get(MARKER_INSTANCE):
                continue
            if p.pid == os.getpid() or (hasattr(os, "getsid") and os.getsid(p.pid) != p.pid):
                continue
            found[env[MARKER_INSTANCE]] = Identity(
                p.pid, float(p.info["create_time"]), list(p.info["cmdline"] or [])
            )
        except (psutil.Error, OSError, TypeError, ValueError):
            continue
    return found


def tail_lines(path: Path, n: int = 20, max_bytes: int = 64 * 1024) -> list[str]:
    """The last ``n`` lines of a log file, reading at most ``max_bytes`` from its end."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    return lines[-n:]
