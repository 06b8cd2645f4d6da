"""engine/process.py with real short-lived processes: sessions, group stop, identity, logs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest

from llama_orchestrator.engine.command import LaunchSpec
from llama_orchestrator.engine.process import (
    AdoptedProcess,
    ChildProcess,
    ExitStatus,
    Identity,
    adopt,
    spawn,
    tail_lines,
)
from llama_orchestrator.logs.rotate import rotate_if_needed

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX sessions and signals")

T = TypeVar("T")

SLEEP = "import time; time.sleep(30)"
IGNORE_TERM = (
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(30)\n"
)
# The "server" starts a helper in its process group that ignores SIGTERM, then reports it.
WITH_GRANDCHILD = (
    "import subprocess, sys, time\n"
    "gc = subprocess.Popen([sys.executable, '-c', "
    '"import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); '
    "print('gc-ready', flush=True); time.sleep(30)\"])\n"
    "print('grandchild', gc.pid, flush=True)\n"
    "time.sleep(30)\n"
)


def run(coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def until(check: Callable[[], Any], timeout: float = 15, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def spec_for(tmp_path: Path, code: str, **env: str) -> LaunchSpec:
    script = tmp_path / "server.py"
    script.write_text(code)
    return LaunchSpec(
        argv=[sys.executable, str(script), "--port", "1234"],
        env_overrides=dict(env),
        stdout=tmp_path / "logs" / "t" / "stdout.log",
        stderr=tmp_path / "logs" / "t" / "stderr.log",
        cwd=tmp_path,
    )


def gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def reaper() -> Iterator[list[int]]:
    """PIDs (group leaders) to kill if a test fails half-way."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A plain sleeping process in its own session (what an orphaned server looks like)."""
    p = subprocess.Popen([sys.executable, "-c", SLEEP], start_new_session=True)
    # until it has exec'd, /proc shows the parent's command line
    deadline = time.monotonic() + 10
    while SLEEP not in psutil.Process(p.pid).cmdline() and time.monotonic() < deadline:
        time.sleep(0.005)
    yield p
    if p.poll() is None:
        p.kill()
    p.wait(10)


def test_spawn_own_session_logs_env_cwd_and_sigterm_stop(tmp_path: Path, reaper: list[int]) -> None:
    code = (
        "import os, sys, time\n"
        "print('out', os.environ['LLAMA_ORCH_T'], os.getcwd(), flush=True)\n"
        "print('err-line', file=sys.stderr, flush=True)\n"
        "time.sleep(30)\n"
    )
    spec = spec_for(tmp_path, code, LLAMA_ORCH_T="from-config")

    async def main() -> tuple[ChildProcess, ExitStatus]:
        proc = spawn(spec, "t")
        reaper.append(proc.pid)
        assert os.getsid(proc.pid) == proc.pid
        assert os.getpgid(proc.pid) == proc.pid
        assert os.getsid(proc.pid) != os.getsid(0)
        assert proc.identity.cmdline == spec.argv
        assert proc.identity.matches_live()
        await until(lambda: "out from-config" in spec.stdout.read_text(), what="child output")
        await until(lambda: "err-line" in spec.stderr.read_text(), what="child stderr")
        assert not proc.has_exited()
        status = await proc.stop(5)
        assert proc.has_exited()
        return proc, status

    proc, status = run(main())
    assert status == ExitStatus(None, signal.SIGTERM)
    assert status.describe() == "killed by SIGTERM"
    assert gone(proc.pid)
    assert proc.signal_group(signal.SIGKILL) is False  # reaped: never signal again
    out = spec.stdout.read_text().splitlines()
    err = spec.stderr.read_text().splitlines()
    for lines in (out, err):
        assert lines[0].startswith("==== llama-orch: starting t at ")
        assert lines[0].endswith(subprocess.list2cmdline(spec.argv))
    assert out[1] == f"out from-config {tmp_path}"
    assert err[1] == "err-line"


def test_logs_are_appended_with_a_marker_per_start(tmp_path: Path, reaper: list[int]) -> None:
    spec = spec_for(tmp_path, "print('run', flush=True)")

    async def main() -> None:
        for _ in range(2):
            proc = spawn(spec, "t")
            reaper.append(proc.pid)
            await proc.wait_exit()
            assert proc.reap() == ExitStatus(0, None)

    run(main())
    text = spec.stdout.read_text()
    assert text.count("==== llama-orch: starting t at ") == 2
    assert text.count("\nrun\n") == 2


def test_exit_is_observed_without_reaping(tmp_path: Path, reaper: list[int]) -> None:
    spec = spec_for(tmp_path, "import sys; sys.exit(3)")

    async def main() -> None:
        proc = spawn(spec, "t")
        reaper.append(proc.pid)
        await proc.wait_exit()
        assert proc.has_exited()
        # not reaped yet, so the PID (and its group id) cannot be reused meanwhile
        assert psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE
        status = proc.reap()
        assert status == ExitStatus(3, None)
        assert status.describe() == "exited with code 3"
        assert proc.reap() is status  # idempotent

    run(main())


def test_sigterm_ignored_means_sigkill_after_grace(tmp_path: Path, reaper: list[int]) -> None:
    spec = spec_for(tmp_path, IGNORE_TERM)

    async def main() -> ExitStatus:
        proc = spawn(spec, "t")
        reaper.append(proc.pid)
        await until(lambda: "ready" in spec.stdout.read_text(), what="SIGTERM handler")
        return await proc.stop(0.3)

    status = run(main())
    assert status.signal == signal.SIGKILL
    assert status.code is None


def test_grandchild_in_the_group_is_killed(tmp_path: Path, reaper: list[int]) -> None:
    spec = spec_for(tmp_path, WITH_GRANDCHILD)

    async def main() -> tuple[int, ExitStatus]:
        proc = spawn(spec, "t")
        reaper.append(proc.pid)

        def grandchild_pid() -> int | None:
            text = spec.stdout.read_text()
            if "gc-ready" not in text:
                return None
            line = next(ln for ln in text.splitlines() if ln.startswith("grandchild "))
            return int(line.split()[1])

        gc = await until(grandchild_pid, what="grandchild")
        assert os.getpgid(gc) == proc.pid
        # the leader dies of SIGTERM at once; the group kill must still take the helper
        return gc, await proc.stop(5)

    gc, status = run(main())
    assert status.signal == signal.SIGTERM
    deadline = time.monotonic() + 10
    while not gone(gc) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gone(gc), "a process the server started outlived its stop"


def test_identity_of_a_reused_pid_does_not_match(sleeper: subprocess.Popen[bytes]) -> None:
    p = psutil.Process(sleeper.pid)
    ct, cmd = p.create_time(), p.cmdline()
    assert Identity(sleeper.pid, ct, cmd).matches_live()
    assert not Identity(sleeper.pid, ct - 100.0, cmd).matches_live()  # recorded earlier
    assert not Identity(sleeper.pid, ct + 1.0, cmd).matches_live()
    assert not Identity(sleeper.pid, ct, [*cmd, "--other"]).matches_live()

    async def main() -> None:
        assert adopt(sleeper.pid, ct - 100.0, cmd) is None
        assert adopt(sleeper.pid, ct, ["llama-server", "-m", "x"]) is None
        adopted = adopt(sleeper.pid, ct, cmd)
        assert adopted is not None and adopted.pid == sleeper.pid

    run(main())
    assert sleeper.poll() is None


def test_adopted_with_wrong_identity_never_signals(sleeper: subprocess.Popen[bytes]) -> None:
    p = psutil.Process(sleeper.pid)
    wrong = Identity(sleeper.pid, p.create_time() - 50.0, p.cmdline())

    async def main() -> None:
        adopted = AdoptedProcess(wrong)
        assert adopted.signal_group(signal.SIGKILL) is False
        assert adopted.signal_group(signal.SIGTERM) is False
        assert adopted.kill() is False
        assert adopted.graceful_signal() is False
        # an identity that does not match reads as "our server is gone"
        assert adopted.has_exited()
        status = await adopted.stop(0.1)
        assert status == ExitStatus(None, None)

    run(main())
    assert sleeper.poll() is None, "the unrelated process was signalled"
    assert psutil.Process(sleeper.pid).status() != psutil.STATUS_ZOMBIE


def test_adopted_with_right_identity_is_stopped(sleeper: subprocess.Popen[bytes]) -> None:
    p = psutil.Process(sleeper.pid)

    async def main() -> ExitStatus:
        adopted = adopt(sleeper.pid, p.create_time(), p.cmdline())
        assert adopted is not None
        assert not adopted.has_exited()
        return await adopted.stop(5)

    status = run(main())
    assert status == ExitStatus(None, None)  # not our child: no status to read
    assert status.describe().startswith("exited (status unknown")
    assert sleeper.wait(10) == -signal.SIGTERM


def test_exit_status_from_returncode() -> None:
    assert ExitStatus.from_returncode(0) == ExitStatus(0, None)
    assert ExitStatus.from_returncode(2) == ExitStatus(2, None)
    assert ExitStatus.from_returncode(-9) == ExitStatus(None, 9)
    assert ExitStatus(None, 9).describe() == "killed by SIGKILL"
    assert ExitStatus(None, 250).describe() == "killed by 250"


def test_rotate_shifts_and_drops_oldest(tmp_path: Path) -> None:
    log = tmp_path / "stdout.log"
    log.write_text("current" * 20)
    for i in (1, 2, 3):
        log.with_name(f"stdout.log.{i}").write_text(f"gen{i}")
    rotate_if_needed(log, max_bytes=100, keep=3)
    assert not log.exists()
    assert log.with_name("stdout.log.1").read_text() == "current" * 20
    assert log.with_name("stdout.log.2").read_text() == "gen1"
    assert log.with_name("stdout.log.3").read_text() == "gen2"  # gen3 dropped
    assert not log.with_name("stdout.log.4").exists()


def test_rotate_with_gaps_and_limits(tmp_path: Path) -> None:
    log = tmp_path / "err.log"
    log.write_text("x" * 10)
    rotate_if_needed(log, max_bytes=11, keep=5)  # below the limit: untouched
    assert log.read_text() == "x" * 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["err.log"]

    rotate_if_needed(log, max_bytes=10, keep=5)  # at the limit: rotated
    assert sorted(p.name for p in tmp_path.iterdir()) == ["err.log.1"]

    rotate_if_needed(tmp_path / "missing.log", max_bytes=1, keep=5)  # nothing to do
    log.write_text("y" * 10)
    rotate_if_needed(log, max_bytes=1, keep=0)  # rotation 0: just truncate away
    assert sorted(p.name for p in tmp_path.iterdir()) == ["err.log.1"]


def test_rotate_keep_one(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.with_name("a.log.1").write_text("old")
    log.write_text("new")
    rotate_if_needed(log, max_bytes=1, keep=1)
    assert log.with_name("a.log.1").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.log.1"]


def test_tail_lines(tmp_path: Path) -> None:
    f = tmp_path / "stderr.log"
    f.write_text("".join(f"line {i}\n" for i in range(100)))
    assert tail_lines(f, 3) == ["line 97", "line 98", "line 99"]
    assert tail_lines(f, 1000)[0] == "line 0"
    # only the last max_bytes are read (the first line may be cut)
    assert tail_lines(f, 1000, max_bytes=13) == ["e 98", "line 99"]
    assert tail_lines(tmp_path / "missing.log") == []
    f.write_bytes(b"ok\n\xff\xfe broken\n")
    assert tail_lines(f, 5) == ["ok", "\ufffd\ufffd broken"]


def test_start_marker_is_one_line(tmp_path: Path, reaper: list[int]) -> None:
    spec = LaunchSpec(
        argv=[
            sys.executable,
            "-c",
            "pass",
            "--chat-template",
            "{% for m in messages %}\n{% endfor %}",
        ],
        env_overrides={},
        stdout=tmp_path / "out.log",
        stderr=tmp_path / "err.log",
        cwd=tmp_path,
    )

    async def main() -> None:
        proc = spawn(spec, "t")
        reaper.append(proc.pid)
        await proc.wait_exit()
        proc.reap()

    run(main())
    for log in (spec.stdout, spec.stderr):
        lines = log.read_text().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith("==== llama-orch: starting t at ")


def test_symlinked_log_file_is_refused(tmp_path: Path, reaper: list[int]) -> None:
    """A log path that is a symbolic link is not followed: outside files stay untouched."""
    spec = spec_for(tmp_path, SLEEP)
    outside = tmp_path / "elsewhere" / "precious.txt"
    outside.parent.mkdir()
    outside.write_text("keep me\n")
    spec.stdout.parent.mkdir(parents=True)
    spec.stdout.symlink_to(outside)
    started: list[Any] = []

    def popen(*args: Any, **kwargs: Any) -> Any:
        started.append(args)
        raise AssertionError("the server must not start")

    with pytest.raises(OSError) as e:
        spawn(spec, "t", popen=popen)
    assert e.value.filename == str(spec.stdout)
    assert "symbolic link" in str(e.value.strerror)
    assert not started
    assert outside.read_text() == "keep me\n"


def test_listens_on_tells_our_listening_socket_from_another_processes() -> None:
    import socket as socketlib

    from llama_orchestrator.engine.sockets import listens_on

    with socketlib.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert listens_on(os.getpid(), port) is True
        other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            assert listens_on(other.pid, port) is False
        finally:
            other.kill()
            other.wait()
    assert listens_on(os.getpid(), port) is False  # closed now
