"""The daemon's keeper: a tiny parent that restarts the daemon process when it dies.

``llama-orch daemon run`` runs this; it starts the real daemon (``daemon run --worker``)
as its child and starts it again when it dies of anything but a clean stop, as
gunicorn's master does for a worker (issue 19, item 3: after ``kill -9`` of the daemon
the gateway must serve again within 2 s, with no command). Servers already survive a
daemon crash and are re-adopted; this brings back the endpoint in front of them.

Why a parent and not the OS service manager: systemd, launchd and the Windows services
restart only what they installed, and most homes never run ``service install``; a parent
works wherever the daemon runs, and under a service manager it is still the one process
the manager watches (``KillMode=process`` signals the keeper, which passes the signal on).

The keeper must never die of its child's faults, so it imports nothing of the daemon
(no event loop, no sockets, no SQLite): it only spawns, waits, forwards signals and
writes its identity beside the daemon's. It starts on every cold ``up``, before the
daemon can, so it imports nothing of the CLI either (cli/fast.py runs it before Typer is
imported), takes its lock with ``flock`` on POSIX (filelock costs ~20 ms to import) and
imports psutil, for its identity, only once the daemon is starting beside it.

A clean stop (exit 0: SIGTERM, SIGINT, the shutdown request) ends the keeper too;
``EXIT_LOCKED`` (another daemon holds the home) ends it at once; a crash loop is slowed
by backoff and given up after ``GIVE_UP`` fast failures in a row.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from llama_orchestrator.client import control
from llama_orchestrator.client.control import keeper_path
from llama_orchestrator.home import Home

EXIT_LOCKED = 3  # the worker found the home's daemon lock taken: another daemon runs
EXIT_BOOT_FAILED = control.EXIT_BOOT_FAILED  # the first daemon died before it listened
FIRST_DELAY_S = 0.05  # a crash after a long run is restarted at once
MAX_DELAY_S = 10.0
STABLE_S = 10.0  # a run this long resets the backoff
BOOT_POLL_S = 0.1  # how often the endpoint file is looked for until the daemon listens
GIVE_UP = 8  # fast failures in a row (each shorter than STABLE_S) before the keeper stops


def _log(msg: str) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"{stamp} INFO llama_orchestrator.keeper: {msg}", file=sys.stderr, flush=True)


def _describe(rc: int) -> str:
    if rc < 0:
        try:
            return f"was killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"was killed by signal {-rc}"
    return f"exited with code {rc}"


class Keeper:
    """Runs the worker until it stops cleanly; see the module docstring."""

    def __init__(
        self, home: Home, worker_argv: list[str], announce: Callable[[], None] | None = None
    ) -> None:
        self.home = home
        self.argv = worker_argv
        self.announce = announce  # called once, when the first daemon has been spawned
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping = False

    def _on_signal(self, sig: int, _frame: FrameType | None) -> None:
        # The keeper has no loop to hand the signal to, and the child must get it now:
        # forwarding is the one thing this handler does besides recording the stop.
        if sig != getattr(signal, "SIGHUP", None):
            self.stopping = True
        if self.child is not None:
            with contextlib.suppress(OSError):
                self.child.send_signal(sig)  # a no-op once the child is reaped

    def install(self) -> None:
        wanted = [signal.SIGTERM, signal.SIGINT]
        if hasattr(signal, "SIGHUP"):
            wanted.append(signal.SIGHUP)
        for sig in wanted:
            signal.signal(sig, self._on_signal)

    def _spawn(self) -> subprocess.Popen[bytes]:
        # POSIX: a session of its own, so a terminal's Ctrl+C reaches the keeper only and
        # the daemon gets it once, forwarded (twice would force its exit).
        return subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, start_new_session=os.name != "nt"
        )

    def _listened(self, pid: int) -> bool:
        """The daemon ``pid`` got as far as writing its endpoint (it served)."""
        try:
            return bool(json.loads(self.home.daemon_endpoint_path.read_text())["pid"] == pid)
        except (OSError, ValueError, KeyError, TypeError):
            return False

    def _wait(self, child: subprocess.Popen[bytes], booted: bool) -> tuple[int, bool]:
        """The child's exit code, and whether it (or one before it) ever listened: until
        it does, the endpoint file is looked at while waiting (the daemon removes it when
        it exits of an error, so after the exit is too late)."""
        while not booted:
            try:
                return child.wait(BOOT_POLL_S), self._listened(child.pid)
            except subprocess.TimeoutExpired:
                booted = self._listened(child.pid)
        return child.wait(), True  # PEP 475: a signal handler does not break the wait

    def run(self) -> int:
        delay, fast_failures, booted = FIRST_DELAY_S, 0, False
        while True:
            started = time.monotonic()
            self.child = self._spawn()
            announce, self.announce = self.announce, None
            if announce is not None:
                announce()
            rc, booted = self._wait(self.child, booted)
            ran = time.monotonic() - started
            if self.stopping or rc == 0:
                return rc
            if rc == EXIT_LOCKED:
                return 1
            if not booted:  # as gunicorn's master when a worker fails to boot: say so now
                _log(f"the daemon {_describe(rc)} before it listened; not starting it again")
                return EXIT_BOOT_FAILED
            if ran >= STABLE_S:
                delay, fast_failures = FIRST_DELAY_S, 0
            else:
                fast_failures += 1
                if fast_failures >= GIVE_UP:
                    _log(f"the daemon failed {fast_failures} times in a row; giving up")
                    return rc if rc > 0 else 1
            _log(f"the daemon {_describe(rc)} after {ran:.1f}s; starting it again")
            time.sleep(delay)
            if self.stopping:
                return 0
            delay = min(MAX_DELAY_S, delay * 4)


def worker_argv(home: Home, port: int = 0) -> list[str]:
    """The command line of the daemon the keeper runs (``daemon run --worker``)."""
    argv = [sys.executable, "-m", "llama_orchestrator", "--home", str(home.root)]
    return [*argv, "daemon", "run", "--worker", "--port", str(port)]


def run_keeper(home: Home, worker_argv: list[str]) -> int:
    """Keep the daemon running for ``home`` (``llama-orch daemon run``)."""
    try:
        home.ensure()
    except OSError as e:  # home.HomeError: a file where one of its folders goes
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BOOT_FAILED
    path = keeper_path(home)
    release = _lock(path.with_suffix(".lock"))
    if release is None:
        print(f"error: a daemon is already running for {home.root}", file=sys.stderr)
        return 1

    def announce() -> None:  # psutil's create_time: what control._keeper checks
        import psutil

        ident = {"pid": os.getpid(), "create_time": psutil.Process().create_time()}
        path.write_text(json.dumps(ident))

    keeper = Keeper(home, worker_argv, announce)
    keeper.install()
    try:
        return keeper.run()
    finally:
        try:
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()
        except (OSError, ValueError):
            pass
        release()


def _lock(path: Path) -> Callable[[], None] | None:
    """Take the keeper's lock file without waiting: its release, or None when another
    keeper holds it. POSIX: ``flock`` on it (what filelock does there); elsewhere, or on
    a file system without ``flock``, filelock itself."""
    try:
        import fcntl
    except ImportError:  # Windows
        return _filelock(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError:  # ENOSYS, EOPNOTSUPP: filelock falls back to a soft lock there
        os.close(fd)
        return _filelock(path)

    def release() -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    return release


def _filelock(path: Path) -> Callable[[], None] | None:
    from filelock import FileLock, Timeout

    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None
    return lambda: lock.release()
