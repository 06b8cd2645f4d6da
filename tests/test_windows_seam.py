"""engine/platform.py: the Windows implementation, exercised on Linux through the seam.

No Windows machine runs the suite, so every Windows entry point (os.kill as
GenerateConsoleCtrlEvent, psutil, shutil.which, os.replace, the signal module) is
injected into ``WindowsPlatform`` and faked here. What only real Windows can show is
listed in the module docstring of ``engine/platform.py``.
"""

from __future__ import annotations

import ast
import asyncio
import logging
import os
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath, PureWindowsPath
from types import SimpleNamespace
from typing import Any

import psutil
import pytest
from helpers import wait_for

import llama_orchestrator.engine.binary as binary_mod
import llama_orchestrator.engine.platform as platform_mod
import llama_orchestrator.engine.process as process_mod
from llama_orchestrator.engine.binary import BinaryError, ResolvedBinary, resolve_binary
from llama_orchestrator.engine.command import LaunchSpec
from llama_orchestrator.engine.platform import (
    PosixPlatform,
    WindowsPlatform,
    current_platform,
)
from llama_orchestrator.engine.process import (
    AdoptedProcess,
    ExitStatus,
    Identity,
    spawn,
)
from llama_orchestrator.home import Home
from llama_orchestrator.logs.rotate import rotate_if_needed, rotate_live

posix_only = pytest.mark.skipif(os.name == "nt", reason="real processes run the POSIX way")

# The signal names Windows' CPython has (no SIGKILL, SIGCONT, SIGSTOP, SIGHUP...).
WINDOWS_SIGNALS = SimpleNamespace(
    SIGABRT=22,
    SIGBREAK=21,
    SIGFPE=8,
    SIGILL=4,
    SIGINT=2,
    SIGSEGV=11,
    SIGTERM=15,
    CTRL_C_EVENT=0,
    CTRL_BREAK_EVENT=1,
)
POSIX_ONLY_NAMES = {
    "SIGKILL",
    "SIGCONT",
    "SIGSTOP",
    "SIGHUP",
    "killpg",
    "getpgid",
    "waitid",
    "WNOWAIT",
    "WEXITED",
    "P_PID",
    "pidfd_open",
    "setsid",
}
WINDOWS_ONLY_NAMES = {
    "CTRL_BREAK_EVENT",
    "CTRL_C_EVENT",
    "CREATE_NEW_PROCESS_GROUP",
    "CREATE_NO_WINDOW",
    "DETACHED_PROCESS",
    "windll",
}


# -- fakes ---------------------------------------------------------------------------


class FakeError(Exception):
    pass


class FakeNoSuchProcess(FakeError):
    pass


class FakeProc:
    def __init__(self, ps: FakePsutil, pid: int, ppid: int, create_time: float) -> None:
        self.ps, self.pid, self._ppid, self._create_time = ps, pid, ppid, create_time
        self.kids: list[FakeProc] = []

    def children(self, recursive: bool = False) -> list[FakeProc]:
        if not recursive:
            return list(self.kids)
        out: list[FakeProc] = []  # breadth first, as psutil lists them
        queue = list(self.kids)
        while queue:
            p = queue.pop(0)
            out.append(p)
            queue.extend(p.kids)
        return out

    def ppid(self) -> int:
        return self._ppid

    def create_time(self) -> float:
        return self._create_time

    def kill(self) -> None:
        self.ps.killed.append(self.pid)


class FakePsutil:
    """The slice of psutil the Windows tree kill uses."""

    Error = FakeError
    NoSuchProcess = FakeNoSuchProcess

    def __init__(self) -> None:
        self.procs: dict[int, FakeProc] = {}
        self.gone: set[int] = set()  # exited leaders: Process() raises, children remain
        self.killed: list[int] = []
        self.waited: list[tuple[list[int], float | None]] = []

    def add(self, pid: int, ppid: int, create_time: float = 100.0) -> FakeProc:
        p = FakeProc(self, pid, ppid, create_time)
        self.procs[pid] = p
        if ppid in self.procs:
            self.procs[ppid].kids.append(p)
        return p

    def Process(self, pid: int) -> FakeProc:
        if pid in self.gone or pid not in self.procs:
            raise FakeNoSuchProcess(pid)
        return self.procs[pid]

    def process_iter(self) -> list[FakeProc]:
        return [p for pid, p in self.procs.items() if pid not in self.gone]

    def wait_procs(self, procs: list[FakeProc], timeout: float | None = None) -> Any:
        self.waited.append(([p.pid for p in procs], timeout))
        return procs, []


class FakeTarget:
    def __init__(self, pid: int = 4242, create_time: float = 100.0, ours: bool = True) -> None:
        self.pid, self.create_time, self.ours = pid, create_time, ours
        self.sent: list[int] = []

    def signal_group(self, sig: int) -> bool:
        self.sent.append(sig)
        return True

    def may_signal(self) -> bool:
        return self.ours


def windows(**kw: Any) -> WindowsPlatform:
    kw.setdefault("signals", WINDOWS_SIGNALS)
    kw.setdefault("has_console", lambda: True)
    kw.setdefault("pathext", ".COM;.EXE;.BAT;.CMD")
    return WindowsPlatform(**kw)


# -- selection and import-time safety -----------------------------------------------------


def test_current_platform_follows_os_name() -> None:
    expected = WindowsPlatform if os.name == "nt" else PosixPlatform
    assert isinstance(current_platform(), expected)
    assert current_platform() is current_platform()


def _module_attrs(node: ast.AST, *, at_import_only: bool) -> set[str]:
    """``x`` for every ``os.x``/``signal.x``/``subprocess.x``/``ctypes.x`` in ``node``;
    with ``at_import_only``, only what import evaluates: everything outside function
    bodies (class bodies, dataclass field defaults, decorators, default arguments)."""
    names: set[str] = set()

    def visit(n: ast.AST) -> None:
        if at_import_only and isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for d in [*n.decorator_list, *n.args.defaults, *n.args.kw_defaults]:
                if d is not None:
                    visit(d)
            return
        if at_import_only and isinstance(n, ast.Lambda):
            return
        if (
            isinstance(n, ast.Attribute)
            and isinstance(n.value, ast.Name)
            and n.value.id in {"os", "signal", "subprocess", "ctypes"}
        ):
            names.add(n.attr)
        for child in ast.iter_child_nodes(n):
            visit(child)

    visit(node)
    return names


@pytest.mark.parametrize("module", [platform_mod, process_mod, binary_mod])
def test_nothing_platform_specific_is_evaluated_at_import(module: Any) -> None:
    at_import = _module_attrs(ast.parse(Path(module.__file__).read_text()), at_import_only=True)
    assert not at_import & POSIX_ONLY_NAMES, "would fail to import on Windows"
    assert not at_import & WINDOWS_ONLY_NAMES, "would fail to import on POSIX"


def test_windows_implementation_uses_no_posix_only_names() -> None:
    tree = ast.parse(Path(platform_mod.__file__).read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "WindowsPlatform")
    used = _module_attrs(cls, at_import_only=False)
    assert not used & POSIX_ONLY_NAMES
    assert {"kill", "replace", "unlink", "which"} & used  # the defaults it injects


def test_windows_implementation_runs_with_the_windows_signal_module() -> None:
    """A ``signal`` without SIGKILL/SIGCONT (as on Windows): stop and kill still work."""
    ps = FakePsutil()
    ps.add(4242, 1)
    plat = windows(ps=ps)
    target = FakeTarget()
    assert plat.graceful_stop(target)
    assert plat.kill(target)
    assert target.sent == [WINDOWS_SIGNALS.CTRL_BREAK_EVENT]
    assert ps.killed == [4242]


# -- spawn flags --------------------------------------------------------------------------


def test_windows_server_spawn_flags_make_a_new_process_group() -> None:
    kwargs = windows().spawn_kwargs()
    assert set(kwargs) == {"creationflags"}  # no start_new_session: POSIX-only
    flags = kwargs["creationflags"]
    assert flags & 0x200  # CREATE_NEW_PROCESS_GROUP
    assert not flags & 0x08000000  # shares the daemon's (hidden) console: CTRL_BREAK reaches
    assert not flags & 0x8  # not DETACHED_PROCESS
    assert getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0x200) == 0x200


def test_windows_server_without_a_console_gets_a_hidden_one() -> None:
    flags = windows(has_console=lambda: False).spawn_kwargs()["creationflags"]
    assert flags & 0x200 and flags & 0x08000000  # no console window per server


def test_windows_daemon_spawn_flags_hidden_console_not_detached() -> None:
    flags = windows().daemon_spawn_kwargs()["creationflags"]
    assert flags == 0x200 | 0x08000000  # CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW
    assert not flags & 0x8  # DETACHED_PROCESS would leave its servers without a console


def test_posix_spawn_kwargs_unchanged() -> None:
    assert PosixPlatform().spawn_kwargs() == {"start_new_session": True}
    assert PosixPlatform().daemon_spawn_kwargs() == {"start_new_session": True}


# -- graceful stop and kill ---------------------------------------------------------------


def test_windows_graceful_stop_sends_ctrl_break_to_the_group() -> None:
    sent: list[tuple[int, int]] = []
    plat = windows(kill_fn=lambda pid, sig: sent.append((pid, sig)))
    assert plat.send_group(4242, 1)
    assert sent == [(4242, 1)]  # os.kill(pid, CTRL_BREAK_EVENT): the group led by pid
    assert plat.is_group_leader(4242)


def test_windows_ctrl_break_failure_is_not_delivered() -> None:
    """GenerateConsoleCtrlEvent fails (OSError) when the group does not share our console."""

    def no_console(pid: int, sig: int) -> None:
        raise OSError(22, "The parameter is incorrect")

    assert not windows(kill_fn=no_console).send_group(4242, 1)


def test_windows_kill_walks_the_tree_children_first() -> None:
    ps = FakePsutil()
    ps.add(10, 1)  # the server
    ps.add(11, 10)
    ps.add(12, 10)
    ps.add(13, 11)  # grandchild
    ps.add(99, 1)  # unrelated
    plat = windows(ps=ps, kill_wait=0.5)
    assert plat.kill(FakeTarget(pid=10))
    assert ps.killed[-1] == 10  # the leader last
    assert sorted(ps.killed) == [10, 11, 12, 13]
    assert ps.killed.index(13) < ps.killed.index(11)  # every child before its parent
    ((waited, timeout),) = ps.waited  # the leader is the engine's to wait for
    assert sorted(waited) == [11, 12, 13] and timeout == 0.5


def test_windows_kill_finds_children_of_a_leader_that_already_exited() -> None:
    ps = FakePsutil()
    ps.add(10, 1, create_time=100.0)
    ps.add(11, 10, create_time=101.0)
    ps.add(14, 11, create_time=102.0)
    impostor = ps.add(12, 0, create_time=50.0)  # PID 10 reused? older than the leader
    impostor._ppid = 10
    ps.gone.add(10)
    assert windows(ps=ps).kill(FakeTarget(pid=10, create_time=100.0))
    assert sorted(ps.killed) == [11, 14]
    assert ps.killed.index(14) < ps.killed.index(11)


def test_windows_kill_refuses_a_pid_that_is_no_longer_ours() -> None:
    ps = FakePsutil()
    ps.add(10, 1)
    assert not windows(ps=ps).kill(FakeTarget(pid=10, ours=False))
    assert ps.killed == []
    ps.gone.add(10)
    assert not windows(ps=ps).kill(FakeTarget(pid=10))  # nothing left at all


def _launcher(calls: list[dict[str, Any]]) -> Any:
    """A Popen stand-in: records what the engine asked for, runs a real process on Linux."""

    def popen(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        calls.append({"argv": argv, **kwargs})
        kwargs.pop("creationflags", None)  # Windows-only; Linux Popen refuses it
        kwargs["start_new_session"] = True
        return subprocess.Popen(LAUNCH_REAL, **kwargs)

    return popen


LAUNCH_REAL = [sys.executable, "-c", "import time; time.sleep(30)"]


def _spec(tmp_path: Path, argv: list[str]) -> LaunchSpec:
    return LaunchSpec(
        argv=argv,
        env_overrides={},
        stdout=tmp_path / "logs" / "stdout.log",
        stderr=tmp_path / "logs" / "stderr.log",
        cwd=tmp_path,
    )


@posix_only
def test_spawn_keeps_drive_letter_and_space_paths_as_single_argv_elements(
    tmp_path: Path,
) -> None:
    exe = r"C:\Program Files\llama\llama-server.exe"
    model = r"D:\models\my model.gguf"
    argv = [*ResolvedBinary("binary", "config", Path(exe)).argv_prefix, "-m", model]
    calls: list[dict[str, Any]] = []

    async def go() -> None:
        proc = spawn(_spec(tmp_path, argv), "t", platform=windows(), popen=_launcher(calls))
        proc.popen.kill()
        await proc.wait_exit()
        proc.reap()

    asyncio.run(go())
    (call,) = calls
    assert call["argv"] == [exe, "-m", model]
    assert "shell" not in call
    assert call["creationflags"] & 0x200
    assert PureWindowsPath(call["argv"][0]).drive == "C:"
    assert PureWindowsPath(call["argv"][0]).name == "llama-server.exe"
    # What Popen hands CreateProcess on Windows: each element quoted as one argument.
    line = subprocess.list2cmdline(call["argv"])
    assert line == rf'"{exe}" -m "{model}"'
    marker = (tmp_path / "logs" / "stdout.log").read_text()
    assert f'"{exe}"' in marker


@posix_only
def test_stop_through_the_windows_seam_tree_kills_when_ctrl_break_cannot_be_sent(
    tmp_path: Path,
) -> None:
    """Real processes, Windows logic: CTRL_BREAK undeliverable -> no grace wait -> tree kill
    (psutil's kill is SIGKILL here, TerminateProcess on Windows)."""
    breaks: list[tuple[int, int]] = []

    def no_console(pid: int, sig: int) -> None:
        breaks.append((pid, sig))
        raise OSError(6, "The handle is invalid")

    plat = windows(kill_fn=no_console, ps=psutil)
    code = (
        "import subprocess, sys, time\n"
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n"
        "print(c.pid, flush=True)\n"
        "time.sleep(30)\n"
    )
    script = tmp_path / "server.py"
    script.write_text(code)

    def popen(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        kwargs.pop("creationflags")
        return subprocess.Popen(argv, **kwargs)

    async def go() -> tuple[int, float, str]:
        proc = spawn(
            _spec(tmp_path, [sys.executable, str(script)]), "t", platform=plat, popen=popen
        )
        log = tmp_path / "logs" / "stdout.log"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            lines = log.read_text().splitlines()
            if len(lines) > 1:
                break
            await asyncio.sleep(0.02)
        child = int(log.read_text().splitlines()[1])
        t0 = time.monotonic()
        status = await proc.stop(grace=30)
        return child, time.monotonic() - t0, status.describe()

    child, took, status = asyncio.run(go())
    assert breaks and breaks[0][1] == 1
    assert took < 10, "waited the grace for a CTRL_BREAK that was never delivered"
    assert status == "killed by SIGKILL"
    deadline = time.monotonic() + 5
    while psutil.pid_exists(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == "zombie"


@posix_only
def test_adopted_process_through_the_windows_seam(tmp_path: Path) -> None:
    real = subprocess.Popen(LAUNCH_REAL)
    try:
        # Until the child has exec'd, /proc shows the parent's command line: wait for it,
        # as an adopted server would long have done.
        wait_for(lambda: psutil.Process(real.pid).cmdline() == LAUNCH_REAL, what="exec")
        ident = Identity(real.pid, psutil.Process(real.pid).create_time(), list(LAUNCH_REAL))
        sent: list[tuple[int, int]] = []
        ps = FakePsutil()
        ps.add(real.pid, os.getpid())

        async def go() -> tuple[bool, bool]:
            adopted = AdoptedProcess(
                ident, platform=windows(kill_fn=lambda p, s: sent.append((p, s)), ps=ps)
            )
            return adopted.graceful_signal(), adopted.kill()

        assert asyncio.run(go()) == (True, True)
        assert sent == [(real.pid, 1)]
        assert ps.killed == [real.pid]
        assert real.poll() is None  # only fakes were told: the real process is untouched
    finally:
        real.kill()
        real.wait()


# -- executables and paths ----------------------------------------------------------------


def test_exe_names() -> None:
    w = windows()
    assert w.exe_name("llama-server") == "llama-server.exe"
    assert w.exe_name("llama-server.EXE") == "llama-server.EXE"
    assert PosixPlatform().exe_name("llama-server") == "llama-server"


def test_exe_candidates_keep_drive_and_spaces() -> None:
    w = windows(pathext=".COM;.BAT;.EXE")
    base = PureWindowsPath(r"C:\Program Files\llama\llama-server")
    cands = w.exe_candidates(base)
    assert cands[0] == PureWindowsPath(r"C:\Program Files\llama\llama-server.exe")
    assert cands[0].drive == "C:" and cands[0].parent.name == "llama"
    assert cands[-1] == base
    assert w.exe_candidates(PureWindowsPath(r"C:\x\llama-server.exe")) == [
        PureWindowsPath(r"C:\x\llama-server.exe")
    ]
    # A dotted version is no extension: the .exe is still looked for.
    assert w.exe_candidates(PureWindowsPath(r"bin\llama-server-b4000.1"))[0].name == (
        "llama-server-b4000.1.exe"
    )
    assert PosixPlatform().exe_candidates(PurePosixPath("/opt/x")) == [PurePosixPath("/opt/x")]


def test_pathext_from_the_environment() -> None:
    w = WindowsPlatform(environ={"PATHEXT": ".CMD;.EXE"})
    assert w.exe_candidates(PureWindowsPath("a"))[:2] == [
        PureWindowsPath("a.exe"),
        PureWindowsPath("a.cmd"),
    ]
    assert WindowsPlatform(environ={}).exe_candidates(PureWindowsPath("a"))[0].name == "a.exe"


@pytest.mark.parametrize(
    ("value", "is_path"),
    [
        (r"C:\Program Files\llama\llama-server.exe", True),
        (r"C:llama-server.exe", True),
        (r"bin\llama-server", True),
        ("bin/llama-server", True),
        ("llama-server.exe", False),
        ("llama-server", False),
    ],
)
def test_windows_path_or_bare_name(value: str, is_path: bool) -> None:
    assert windows().has_dir_component(value) is is_path


def _file(path: Path, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"MZ")
    path.chmod(mode)  # not executable for POSIX: Windows goes by the extension
    return path


def test_windows_home_binary_is_the_exe(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    _file(home.bin_dir / "llama-server", 0o755)  # a POSIX build left there: not for Windows
    none_on_path = windows(which_fn=lambda name: None)
    got = resolve_binary(None, home, environ={}, platform=none_on_path)
    assert got.kind == "embedded"
    exe = _file(home.bin_dir / "llama-server.exe")
    got = resolve_binary(None, home, environ={}, platform=none_on_path)
    assert (got.source, got.path) == ("home", exe)


def test_windows_path_lookup_goes_through_which_with_pathext(tmp_path: Path) -> None:
    """``shutil.which`` applies PATHEXT on Windows; the fake does what it does there."""
    found = _file(tmp_path / "Program Files" / "llama" / "llama-server.exe")
    asked: list[str] = []

    def which(name: str) -> str | None:
        asked.append(name)
        for ext in ["", ".exe"]:
            cand = found.parent / (name + ext)
            if cand.is_file():
                return str(cand)
        return None

    plat = windows(which_fn=which)
    got = resolve_binary(None, Home(tmp_path / "home"), environ={}, platform=plat)
    assert (got.source, got.path) == ("PATH", found)
    assert asked == ["llama-server"]
    assert got.argv_prefix == [str(found)]  # one element, space and all
    got = resolve_binary("llama-server", Home(tmp_path / "home"), environ={}, platform=plat)
    assert (got.source, got.path) == ("config 'binary'", found)
    with pytest.raises(BinaryError, match="not on PATH"):
        resolve_binary("missing-server", Home(tmp_path / "h"), environ={}, platform=plat)


def test_windows_configured_path_without_extension_finds_the_exe(tmp_path: Path) -> None:
    exe = _file(tmp_path / "my build" / "llama-server.exe")
    home = Home(tmp_path / "home")
    plat = windows(which_fn=lambda name: None)
    got = resolve_binary(str(tmp_path / "my build" / "llama-server"), home, platform=plat)
    assert got.path == exe
    # Relative to the config directory, with a backslash-free relative path too.
    got = resolve_binary("my build/llama-server", home, config_dir=tmp_path, platform=plat)
    assert got.path == exe
    got = resolve_binary(None, home, environ={"LLAMA_SERVER": str(exe)}, platform=plat)
    assert (got.source, got.path) == ("LLAMA_SERVER", exe)


def test_windows_non_executable_extension_is_refused(tmp_path: Path) -> None:
    txt = _file(tmp_path / "llama-server.txt", 0o755)
    with pytest.raises(BinaryError, match="not executable"):
        resolve_binary(str(txt), Home(tmp_path / "home"), platform=windows())


# -- logs held open by another process ----------------------------------------------------


def _held_open_replace(*held: Path) -> Any:
    """os.replace as Windows does it when a process holds the source or target open."""

    def replace(src: Path, dst: Path) -> None:
        if Path(src) in held or Path(dst) in held:
            raise PermissionError(
                13,
                "The process cannot access the file because it is being used by another process",
                str(src),
            )
        os.replace(src, dst)

    return replace


def test_rotate_falls_back_to_copy_truncate_when_the_log_is_held_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "stdout.log"
    log.write_text("old output\n")
    (tmp_path / "stdout.log.1").write_text("older\n")
    plat = windows(replace_fn=_held_open_replace(log))
    with caplog.at_level(logging.WARNING):
        rotate_if_needed(log, max_bytes=5, keep=3, platform=plat)
    assert (tmp_path / "stdout.log.2").read_text() == "older\n"
    assert (tmp_path / "stdout.log.1").read_text() == "old output\n"
    assert log.exists() and log.read_text() == ""
    assert "copy and truncate" in caplog.text and "another process" in caplog.text


def test_rotate_is_skipped_with_a_warning_when_an_old_rotation_is_held_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "stdout.log"
    log.write_text("current\n")
    one = tmp_path / "stdout.log.1"
    one.write_text("previous\n")
    plat = windows(replace_fn=_held_open_replace(one))
    with caplog.at_level(logging.WARNING):
        rotate_if_needed(log, max_bytes=5, keep=3, platform=plat)
        assert not rotate_live(log, max_bytes=5, keep=3, platform=plat)
    assert log.read_text() == "current\n" and one.read_text() == "previous\n"
    assert not (tmp_path / "stdout.log.2").exists()
    assert "skipped" in caplog.text and str(one) in caplog.text


def test_rotate_keep_zero_truncates_when_delete_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "stdout.log"
    log.write_text("x" * 50)

    def unlink(path: Path) -> None:
        raise PermissionError(13, "being used by another process", str(path))

    with caplog.at_level(logging.WARNING):
        rotate_if_needed(log, max_bytes=5, keep=0, platform=windows(unlink_fn=unlink))
    assert log.read_text() == ""
    assert "truncating it instead" in caplog.text


def test_rotate_live_through_the_windows_seam(tmp_path: Path) -> None:
    """copytruncate never renames the live file, so a held-open log rotates on Windows."""
    log = tmp_path / "stdout.log"
    log.write_text("0123456789")
    (tmp_path / "stdout.log.1").write_text("older")
    plat = windows(replace_fn=_held_open_replace(log))
    with open(log, "ab"):  # the server's handle
        assert rotate_live(log, max_bytes=5, keep=2, platform=plat)
    assert (tmp_path / "stdout.log.2").read_text() == "older"
    assert (tmp_path / "stdout.log.1").read_text() == "0123456789"
    assert log.read_text() == ""


def test_windows_exit_codes_are_described() -> None:
    assert ExitStatus(0xC000013A, None).describe() == "exited on CTRL_BREAK (0xC000013A)"
    assert ExitStatus(0xC0000005, None).describe() == "exited with code 0xC0000005"
    assert ExitStatus(15, None).describe() == "exited with code 15"  # psutil's TerminateProcess
