"""The engine's platform seam: everything that differs between POSIX and Windows.

The engine (``process.py``, ``binary.py``) and the daemon launcher never branch on
``os.name`` themselves; they ask a ``Platform``, injected as a parameter that defaults to
``current_platform()``. Both implementations are importable and usable everywhere, so the
Windows one is unit-tested on Linux with fakes (no Windows machine runs the suite).

Import-time rule: this module touches no name that is missing on one of the platforms
(``signal.SIGKILL``/``SIGCONT``, ``os.killpg``/``getpgid``/``waitid`` do not exist on
Windows; ``signal.CTRL_BREAK_EVENT`` and ``subprocess.CREATE_NEW_PROCESS_GROUP`` do not
exist on POSIX). Such names are looked up inside methods only, or through ``getattr``
with the documented numeric value as the fallback.

Windows process model, as used here:

* A server is started with ``CREATE_NEW_PROCESS_GROUP``: it leads a console process
  group whose id is its PID, and CTRL+C is disabled in it (as ``start_new_session``
  detaches a POSIX server from the terminal's SIGINT).
* Graceful stop is ``os.kill(pid, CTRL_BREAK_EVENT)``, which CPython turns into
  ``GenerateConsoleCtrlEvent(CTRL_BREAK_EVENT, pid)``: the event goes to that whole
  group. CTRL_C cannot be aimed at a group (Windows delivers it to nobody when a group
  id is given) and is disabled in the group anyway. llama-server's console handler
  only handles CTRL_C_EVENT; for CTRL_BREAK it returns FALSE, so the default handler
  runs and calls ``ExitProcess``: the server exits at once (no request drain, nothing
  to lose: it keeps no state on disk). A console control event only reaches processes
  that share the sender's console, hence the daemon's own spawn flags below.
* Kill is a psutil tree kill: descendants first (deepest first), then the leader, then
  ``psutil.wait_procs`` with a short timeout. Windows has no process groups for
  signals, and a killed parent does not take its children with it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Protocol, TypeVar

import psutil

# Documented values of the Win32 constants, for use where the Python module lacks them.
CREATE_NEW_PROCESS_GROUP = 0x00000200
CREATE_NO_WINDOW = 0x08000000
DETACHED_PROCESS = 0x00000008
CTRL_BREAK_EVENT = 1
DEFAULT_PATHEXT = ".COM;.EXE;.BAT;.CMD"

P = TypeVar("P", bound=PurePath)


class Target(Protocol):
    """What the platform needs of a server process handle (``process.ServerProcess``)."""

    @property
    def pid(self) -> int: ...

    @property
    def create_time(self) -> float: ...

    def signal_group(self, sig: int) -> bool: ...

    def may_signal(self) -> bool: ...


class Platform(Protocol):
    @property
    def name(self) -> str: ...

    # -- processes ---------------------------------------------------------------------
    def spawn_kwargs(self) -> dict[str, Any]:
        """Extra ``Popen`` keyword arguments that put a server in its own group."""
        ...

    def daemon_spawn_kwargs(self) -> dict[str, Any]:
        """Extra ``Popen`` keyword arguments for the background daemon."""
        ...

    def send_group(self, pid: int, sig: int) -> bool:
        """Signal the group led by ``pid``; False when it is gone or not ours."""
        ...

    def send_one(self, pid: int, sig: int) -> bool: ...

    def is_group_leader(self, pid: int) -> bool: ...

    def graceful_stop(self, target: Target) -> bool:
        """Ask the server's group to exit; True when the request was delivered."""
        ...

    def kill(self, target: Target) -> bool: ...

    def wait_blocking(self, popen: subprocess.Popen[bytes]) -> None:
        """Block until the child exits, without reaping it where that is possible."""
        ...

    # -- executables and paths ---------------------------------------------------------
    def exe_name(self, base: str) -> str: ...

    def exe_candidates(self, path: P) -> list[P]:
        """The files an executable path given by a user may mean, most likely first."""
        ...

    def is_executable(self, path: Path) -> bool: ...

    def has_dir_component(self, value: str) -> bool:
        """Is ``value`` a path (relative or absolute) rather than a bare command name?"""
        ...

    def which(self, name: str) -> str | None: ...

    # -- files -------------------------------------------------------------------------
    def replace(self, src: Path, dst: Path) -> None: ...

    def unlink(self, path: Path) -> None: ...


@dataclass(frozen=True)
class PosixPlatform:
    """Linux and macOS: sessions, process-group signals, ``waitid(WNOWAIT)``."""

    which_fn: Callable[[str], str | None] = shutil.which
    replace_fn: Callable[[Path, Path], None] = os.replace
    unlink_fn: Callable[[Path], None] = os.unlink

    @property
    def name(self) -> str:
        return "posix"

    def spawn_kwargs(self) -> dict[str, Any]:
        return {"start_new_session": True}

    def daemon_spawn_kwargs(self) -> dict[str, Any]:
        return {"start_new_session": True}

    def send_group(self, pid: int, sig: int) -> bool:
        try:
            os.killpg(pid, sig)
            return True
        except (ProcessLookupError, PermissionError):
            return False

    def send_one(self, pid: int, sig: int) -> bool:
        try:
            os.kill(pid, sig)
            return True
        except (ProcessLookupError, PermissionError):
            return False

    def is_group_leader(self, pid: int) -> bool:
        try:
            return os.getpgid(pid) == pid
        except (ProcessLookupError, PermissionError):
            return False

    def graceful_stop(self, target: Target) -> bool:
        sent = target.signal_group(signal.SIGTERM)
        # As systemd does: a stopped (SIGSTOP) process only acts on SIGTERM once continued.
        target.signal_group(signal.SIGCONT)
        return sent

    def kill(self, target: Target) -> bool:
        return target.signal_group(signal.SIGKILL)

    def wait_blocking(self, popen: subprocess.Popen[bytes]) -> None:
        while True:
            try:
                os.waitid(os.P_PID, popen.pid, os.WEXITED | os.WNOWAIT)
                return
            except ChildProcessError:
                return
            except InterruptedError:
                continue

    def exe_name(self, base: str) -> str:
        return base

    def exe_candidates(self, path: P) -> list[P]:
        return [path]

    def is_executable(self, path: Path) -> bool:
        return path.is_file() and os.access(path, os.X_OK)

    def has_dir_component(self, value: str) -> bool:
        return "/" in value

    def which(self, name: str) -> str | None:
        return self.which_fn(name)

    def replace(self, src: Path, dst: Path) -> None:
        self.replace_fn(src, dst)

    def unlink(self, path: Path) -> None:
        self.unlink_fn(path)


def _has_console() -> bool:
    """Is a console attached to this process? (``GetConsoleCP`` fails, 0, without one.)"""
    try:
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        return bool(kernel32.GetConsoleCP())
    except (ImportError, AttributeError, OSError):
        return True


@dataclass(frozen=True)
class WindowsPlatform:
    """Windows: console process groups, CTRL_BREAK, psutil tree kill, ``.exe``/PATHEXT.

    Every OS entry point is a field, so tests run this on Linux with fakes:
    ``kill_fn`` is ``os.kill`` (``GenerateConsoleCtrlEvent`` for the CTRL events),
    ``ps`` the psutil module, ``signals`` the signal module (only Windows names are used).
    """

    kill_fn: Callable[[int, int], None] = os.kill
    ps: Any = psutil
    signals: Any = signal
    which_fn: Callable[[str], str | None] = shutil.which
    replace_fn: Callable[[Path, Path], None] = os.replace
    unlink_fn: Callable[[Path], None] = os.unlink
    pathext: str | None = None  # None: $PATHEXT, else the Windows default
    has_console: Callable[[], bool] = _has_console
    kill_wait: float = 1.0  # seconds wait_procs may block after TerminateProcess
    environ: Mapping[str, str] | None = field(default=None, repr=False)  # None: os.environ

    @property
    def name(self) -> str:
        return "windows"

    # -- processes ---------------------------------------------------------------------
    def _flag(self, name: str, default: int) -> int:
        return int(getattr(subprocess, name, default))

    def spawn_kwargs(self) -> dict[str, Any]:
        flags = self._flag("CREATE_NEW_PROCESS_GROUP", CREATE_NEW_PROCESS_GROUP)
        # The server shares the daemon's console so that CTRL_BREAK can reach it. A daemon
        # without a console (a service, pythonw) would make Windows open a visible console
        # window per server: give it a hidden one of its own instead; graceful stop then
        # cannot be delivered and stop() goes straight to the tree kill.
        if not self.has_console():
            flags |= self._flag("CREATE_NO_WINDOW", CREATE_NO_WINDOW)
        return {"creationflags": flags}

    def daemon_spawn_kwargs(self) -> dict[str, Any]:
        # Not DETACHED_PROCESS: a daemon without a console cannot send CTRL_BREAK to its
        # servers, and each console server it starts would pop up a console window.
        # CREATE_NO_WINDOW gives it a console of its own, hidden, which its servers
        # inherit; it also outlives the terminal the CLI ran in.
        return {
            "creationflags": self._flag("CREATE_NEW_PROCESS_GROUP", CREATE_NEW_PROCESS_GROUP)
            | self._flag("CREATE_NO_WINDOW", CREATE_NO_WINDOW)
        }

    def send_group(self, pid: int, sig: int) -> bool:
        # For CTRL_BREAK_EVENT, os.kill is GenerateConsoleCtrlEvent(sig, pid): the group.
        # It fails with OSError (not ProcessLookupError) when the group is gone or does
        # not share our console.
        try:
            self.kill_fn(pid, sig)
            return True
        except OSError:
            return False

    def send_one(self, pid: int, sig: int) -> bool:
        return self.send_group(pid, sig)

    def is_group_leader(self, pid: int) -> bool:
        return True  # every server we start leads its group (CREATE_NEW_PROCESS_GROUP)

    def graceful_stop(self, target: Target) -> bool:
        sig = int(getattr(self.signals, "CTRL_BREAK_EVENT", CTRL_BREAK_EVENT))
        return target.signal_group(sig)

    def kill(self, target: Target) -> bool:
        return target.may_signal() and self.kill_tree(target.pid, target.create_time)

    def kill_tree(self, pid: int, create_time: float | None = None) -> bool:
        """Kill ``pid`` and all its descendants: deepest first, the leader last."""
        ps = self.ps
        root: Any = None
        try:
            root = ps.Process(pid)
            descendants = list(root.children(recursive=True))
        except ps.Error:
            root = None
            descendants = self._orphans_of(pid, create_time)
        if root is None and not descendants:
            return False
        # children(recursive=True) lists breadth first: reversed, the deepest go first,
        # so no parent lives on to notice (or restart) a child it lost.
        procs = [*reversed(descendants), *([root] if root is not None else [])]
        for p in procs:
            with contextlib.suppress(ps.Error):
                p.kill()
        # Wait for the descendants only: the leader's exit is the engine's to observe and
        # reap through its own handle (psutil's wait would reap a POSIX child under it).
        if descendants:
            with contextlib.suppress(ps.Error):
                ps.wait_procs(descendants, timeout=self.kill_wait)
        return True

    def _orphans_of(self, pid: int, create_time: float | None) -> list[Any]:
        """Descendants of a leader that already exited (Windows does not re-parent).

        A PID may be reused, so only processes started after the leader count.
        """
        if create_time is None:
            return []
        ps = self.ps
        found: list[Any] = []
        try:
            for p in ps.process_iter():
                try:
                    if p.ppid() == pid and p.create_time() >= create_time:
                        found.append(p)
                        found.extend(p.children(recursive=True))
                except ps.Error:
                    continue
        except ps.Error:
            return found
        return found

    def wait_blocking(self, popen: subprocess.Popen[bytes]) -> None:
        # Windows keeps the process object (and its PID) alive while Popen holds its
        # handle, so waiting here does not expose the PID to reuse.
        popen.wait()

    # -- executables and paths ---------------------------------------------------------
    def _pathext(self) -> list[str]:
        raw = self.pathext
        if raw is None:
            env = os.environ if self.environ is None else self.environ
            raw = env.get("PATHEXT") or DEFAULT_PATHEXT
        exts = [e.strip().lower() for e in raw.split(";") if e.strip()]
        # .exe first: a llama-server.bat wrapper next to the binary should not win.
        return sorted(exts, key=lambda e: e != ".exe")

    def exe_name(self, base: str) -> str:
        return base if base.lower().endswith(".exe") else base + ".exe"

    def exe_candidates(self, path: P) -> list[P]:
        exts = self._pathext()
        if path.suffix.lower() in exts:
            return [path]
        # with_name, not with_suffix: "llama-server-b4000.1" has a "suffix" too.
        return [path.with_name(path.name + ext) for ext in exts] + [path]

    def is_executable(self, path: Path) -> bool:
        # os.access(X_OK) is always true on Windows; executability is the extension.
        return path.is_file() and path.suffix.lower() in self._pathext()

    def has_dir_component(self, value: str) -> bool:
        return "\\" in value or "/" in value or (len(value) >= 2 and value[1] == ":")

    def which(self, name: str) -> str | None:
        return self.which_fn(name)  # shutil.which applies PATHEXT on Windows

    # -- files -------------------------------------------------------------------------
    def replace(self, src: Path, dst: Path) -> None:
        # Python's open() on Windows shares read and write but not delete: renaming a
        # log that any process holds open raises PermissionError (WinError 32).
        self.replace_fn(src, dst)

    def unlink(self, path: Path) -> None:
        self.unlink_fn(path)


@functools.lru_cache(maxsize=1)
def current_platform() -> Platform:
    """The platform this interpreter runs on (``os.name``)."""
    return WindowsPlatform() if os.name == "nt" else PosixPlatform()
