"""Fault injection (issue 3): each fault once, asserting what a user would check.

Did the server come back (or, on purpose, not)? Do ``ps``, the state and the events in
SQLite say why? Was anything else disturbed (another instance, a foreign process)?
Real servers (the embedded engine) wherever the fault can be produced on them; the fake
server (tests/fakeserver.py) only for faults a real server cannot be made to show.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import Cli, free_port, write_config
from helpers import chat, events, fake_binary, gone, health, ps_row, wait_for

from llama_orchestrator.home import Home
from llama_orchestrator.state.db import StateStore

# Fast checks: a hang is noticed within interval x retries + timeout (about 1.5 s).
FAST_HC = {"interval": 0.2, "timeout": 1.0, "retries": 2, "start_period": 30}
# A bystander is watched leniently: a slow CI machine must not look like a fault.
CALM_HC = {"interval": 0.5, "timeout": 2.0, "retries": 3, "start_period": 30}
# Quick crash loops; a run never counts as stable, so every failure counts.
QUICK = {"backoff_base": 0.2, "backoff_multiplier": 2.0, "backoff_max": 5.0, "stable_after": 60}


# -- helpers ---------------------------------------------------------------------------


def _record(home: Home, name: str) -> dict[str, Any]:
    store = StateStore(home.db_path)
    try:
        row = store.get(name)
    finally:
        store.close()
    assert row is not None, name
    return row.to_row()


def _reasons(home: Home, name: str, kind: str, new: str | None = None) -> list[str]:
    return [
        str(e["reason"])
        for e in events(home, name)
        if e["kind"] == kind and (new is None or e["new"] == new)
    ]


def _spawns(home: Home, name: str) -> int:
    return sum(1 for e in events(home, name) if e["kind"] == "spawned")


def _stays(check: Callable[[], bool], duration: float, what: str) -> None:
    """``check`` holds on every poll for ``duration`` seconds (the opposite of wait_for)."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        assert check(), f"{what} stopped holding"
        time.sleep(0.05)


def _daemon_pid(home: Home) -> int:
    return int(json.loads(home.daemon_pid_path.read_text())["pid"])


def _running_with_new_pid(cli: Cli, name: str, old_pid: int) -> Callable[[], Any]:
    return lambda: (r := ps_row(cli, name))["status"] == "running" and r["pid"] != old_pid and r


_SITECUSTOMIZE = """\
import os, runpy, sys, traceback
_main = os.environ.pop("FAKE_SERVER_MAIN", None)
if _main:
    with open("/proc/self/cmdline", "rb") as f:
        sys.argv = [_main] + [a.decode() for a in f.read().split(b"\\0")[1:-1]]
    code = 0
    try:
        runpy.run_path(_main, run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else int(e.code is not None)
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
"""


def _nativefake_binary(tmp_path: Path) -> Path:
    """The fake server, started so that its command line is exactly the argv it was given.

    A compiled llama-server's ``/proc/<pid>/cmdline`` equals the argv the daemon recorded,
    which is what re-adoption checks. A script's does not (the kernel puts the interpreter
    in front), so here bash's ``exec -a`` keeps argv[0] and the fake runs from a
    ``sitecustomize`` instead of a script argument. Linux only (reads /proc/self/cmdline).
    """
    if not sys.platform.startswith("linux") or shutil.which("bash") is None:
        pytest.skip("the native-looking fake server needs Linux and bash")
    site = tmp_path / "fake-site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    fake = Path(__file__).with_name("fakeserver.py")
    script = tmp_path / "native-fake-llama-server"
    script.write_text(
        "#!/usr/bin/env bash\n"
        f'export PYTHONPATH="{site}" FAKE_SERVER_MAIN="{fake}"\n'
        f'exec -a "$0" "{sys.executable}" "$@"\n'
    )
    script.chmod(0o755)
    return script


_STRANGER = r"""
import signal, socket, sys, time
log, port = sys.argv[1], int(sys.argv[2])
def record(sig, frame):
    with open(log, "a") as f:
        f.write(signal.Signals(sig).name + "\n")
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGCONT,
          signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM, signal.SIGPIPE):
    signal.signal(s, record)
if port:
    print("armed", flush=True)
    sys.stdin.readline()  # go: take the port as soon as it is free
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    deadline = time.monotonic() + 10
    while True:
        try:
            sock.bind(("127.0.0.1", port))
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.002)
    sock.listen()
print("ready", flush=True)
while True:
    time.sleep(1)
"""


class Stranger:
    """An unrelated process that records every catchable signal it receives to a file."""

    def __init__(self, tmp_path: Path, port: int = 0) -> None:
        self.log = tmp_path / f"stranger-{port}.signals"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _STRANGER, str(self.log), str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        expected = "armed" if port else "ready"
        assert self.proc.stdout.readline().strip() == expected

    @property
    def pid(self) -> int:
        return self.proc.pid

    def go(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "ready"

    def assert_untouched(self) -> None:
        assert self.proc.poll() is None, "the unrelated process was killed"
        assert psutil.Process(self.pid).status() != psutil.STATUS_STOPPED
        received = self.log.read_text() if self.log.exists() else ""
        assert received == "", f"the unrelated process was signalled: {received!r}"

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def stranger_factory(tmp_path: Path) -> Iterator[Callable[..., Stranger]]:
    made: list[Stranger] = []

    def make(port: int = 0) -> Stranger:
        s = Stranger(tmp_path, port)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def _bystander(cli: Cli, home: Home, model: Path) -> tuple[int, int]:
    """A second healthy instance; returns (pid, port) to prove it was left alone."""
    port = free_port()
    write_config(home, "bystander", model, port, healthcheck=CALM_HC)
    out = cli("up", "bystander")
    assert out.returncode == 0, out.stderr
    return ps_row(cli, "bystander")["pid"], port


def _assert_undisturbed(cli: Cli, home: Home, pid: int, port: int) -> None:
    row = ps_row(cli, "bystander")
    assert row["pid"] == pid and row["status"] == "running" and row["restarts"] == 0
    assert health(port) == 200
    assert _spawns(home, "bystander") == 1


# -- the faults ------------------------------------------------------------------------


def test_fault_kill9_server_is_restarted(cli: Cli, home: Home, tiny_model: Path) -> None:
    other_pid, other_port = _bystander(cli, home, tiny_model)
    port = free_port()
    write_config(home, "alpha", tiny_model, port, healthcheck=FAST_HC)
    assert cli("up", "alpha").returncode == 0
    pid = ps_row(cli, "alpha")["pid"]

    os.kill(pid, signal.SIGKILL)

    row = wait_for(_running_with_new_pid(cli, "alpha", pid), what="restart after kill -9")
    assert row["restarts"] == 1 and row["health"] == "healthy"
    assert health(port) == 200 and isinstance(chat(port), str)
    assert gone(pid)
    assert _reasons(home, "alpha", "exit") == ["killed by SIGKILL"]
    backoff = _reasons(home, "alpha", "state", new="backoff")
    assert len(backoff) == 1 and "killed by SIGKILL" in backoff[0]
    assert "restarting in 0.0s" in backoff[0]  # the first crash after a healthy run: no wait
    assert _spawns(home, "alpha") == 2
    _assert_undisturbed(cli, home, other_pid, other_port)


def test_fault_sigstop_hang_is_detected_killed_and_restarted(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    other_pid, other_port = _bystander(cli, home, tiny_model)
    port = free_port()
    write_config(home, "frozen", tiny_model, port, healthcheck=FAST_HC, restart_policy=QUICK)
    assert cli("up", "frozen").returncode == 0
    pid = ps_row(cli, "frozen")["pid"]

    os.kill(pid, signal.SIGSTOP)  # alive, port open, never answers

    row = wait_for(_running_with_new_pid(cli, "frozen", pid), what="hung server replaced")
    assert row["restarts"] == 1 and health(port) == 200
    # SIGTERM stays pending while a process is stopped: only the escalation to SIGKILL
    # could end it
    assert gone(pid)
    health_reasons = _reasons(home, "frozen", "health", new="unhealthy")
    assert any("timed out" in r for r in health_reasons), health_reasons
    # SIGTERM is followed by SIGCONT (as systemd does), so the frozen server wakes up
    # and exits on its own instead of waiting out the grace for SIGKILL.
    assert _reasons(home, "frozen", "exit") == ["stopped as unhealthy: exited with code 0"]
    backoff = _reasons(home, "frozen", "state", new="backoff")
    assert len(backoff) == 1 and "health check failed 2 times: timed out" in backoff[0]
    _assert_undisturbed(cli, home, other_pid, other_port)


def test_fault_health_ok_but_completions_fail(
    cli: Cli, home: Home, tiny_model: Path, tmp_path: Path
) -> None:
    port = free_port()
    write_config(
        home,
        "mute",
        tiny_model,
        port,
        binary=str(fake_binary(tmp_path)),
        # the first server answers /health 200 and 500 on every completion; the
        # restarted one is sound
        env={"FAKE_COMPLETIONS_FAIL": "1", "FAKE_FAULT_ONCE": str(tmp_path / "faulted")},
        healthcheck=dict(FAST_HC, probe="completion", probe_every=1),
        restart_policy=QUICK,
    )
    assert cli("up", "mute").returncode == 0
    pid = ps_row(cli, "mute")["pid"]

    row = wait_for(
        _running_with_new_pid(cli, "mute", pid), what="restart on failed completion probe"
    )
    assert row["restarts"] == 1
    assert gone(pid)
    backoff = _reasons(home, "mute", "state", new="backoff")
    assert len(backoff) == 1, backoff
    assert "completion probe: HTTP 500" in backoff[0], backoff
    unhealthy = _reasons(home, "mute", "health", new="unhealthy")
    assert unhealthy and all("completion probe" in r for r in unhealthy), unhealthy
    assert _reasons(home, "mute", "exit") == ["stopped as unhealthy: killed by SIGTERM"]
    # the new server infers, passes its probes and is left alone
    assert chat(port) == "x"
    new_pid = row["pid"]
    _stays(
        lambda: (r := ps_row(cli, "mute"))["pid"] == new_pid and r["health"] == "healthy",
        1.5,
        "the healed server",
    )


def test_failed_up_fails_once_and_automatic_restarts_back_off_then_fatal(
    cli: Cli, home: Home, tiny_model: Path, tmp_path: Path
) -> None:
    import random

    model = tmp_path / "crashy.gguf"
    shutil.copyfile(tiny_model, model)
    port = free_port()
    write_config(
        home, "crashy", model, port, healthcheck=FAST_HC, restart_policy=dict(QUICK, max_retries=3)
    )
    assert cli("up", "crashy").returncode == 0
    pid = ps_row(cli, "crashy")["pid"]
    # the model goes bad under the running server (which keeps the old file open)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + random.Random(3).randbytes(256))
    os.replace(bad, model)
    os.kill(pid, signal.SIGKILL)

    row = wait_for(
        lambda: (r := ps_row(cli, "crashy"))["status"] == "fatal" and r, what="fatal state"
    )
    assert row["pid"] is None and "during start: exited with code" in row["last_error"]
    delays = [
        float(m.group(1))
        for r in _reasons(home, "crashy", "state", new="backoff")
        if (m := re.search(r"restarting in ([0-9.]+)s", r))
    ]
    # automatic restarts keep the policy: at once after the healthy run, then base, x2
    assert delays == [0.0, 0.2, 0.4], delays
    exits = _reasons(home, "crashy", "exit")
    assert len(exits) == 4 and all(e.startswith(("exited with code", "killed by")) for e in exits)
    assert _spawns(home, "crashy") == 4  # the first start and three restarts
    fatal = _reasons(home, "crashy", "state", new="fatal")
    assert len(fatal) == 1 and "gave up after 3 restart(s)" in fatal[0], fatal
    _stays(
        lambda: _spawns(home, "crashy") == 4 and ps_row(cli, "crashy")["status"] == "fatal",
        1.0,
        "fatal and quiet",
    )

    # a start asked for by a person fails once, says so, and is not retried
    out = cli("up", "crashy")
    assert out.returncode == 1
    assert "error: crashy: during start" in out.stderr
    _stays(
        lambda: _spawns(home, "crashy") == 5 and ps_row(cli, "crashy")["status"] == "fatal",
        1.0,
        "fatal after one attempt",
    )
    assert "not retried" in ps_row(cli, "crashy")["last_error"]
    assert health(port) is None


def test_fault_model_removed_while_running_then_crash(
    cli: Cli, home: Home, tiny_model: Path, tmp_path: Path
) -> None:
    model = tmp_path / "vanishing.gguf"
    shutil.copyfile(tiny_model, model)
    port = free_port()
    write_config(
        home, "alpha", model, port, healthcheck=FAST_HC, restart_policy=dict(QUICK, max_retries=2)
    )
    assert cli("up", "alpha").returncode == 0
    pid = ps_row(cli, "alpha")["pid"]

    model.unlink()
    # a running server does not need its file: nothing happens until it dies
    _stays(lambda: health(port) == 200 and ps_row(cli, "alpha")["pid"] == pid, 0.6, "still serving")
    os.kill(pid, signal.SIGKILL)

    row = wait_for(lambda: (r := ps_row(cli, "alpha"))["status"] == "fatal" and r, what="gives up")
    expected = f"model.path: does not exist ({model})"
    assert expected in row["last_error"], row["last_error"]
    refusals = _reasons(home, "alpha", "start_refused")
    assert len(refusals) == 2 and all(expected in r for r in refusals), refusals
    assert _spawns(home, "alpha") == 1  # never launched without a model
    _stays(
        lambda: _spawns(home, "alpha") == 1 and ps_row(cli, "alpha")["status"] == "fatal",
        1.0,
        "fatal and quiet",
    )
    assert health(port) is None
    # `up` says the same thing to the user's face
    out = cli("up", "alpha")
    assert out.returncode == 1 and expected in out.stderr


def test_fault_restart_of_server_ignoring_sigterm(
    cli: Cli, home: Home, tiny_model: Path, tmp_path: Path
) -> None:
    port = free_port()
    write_config(
        home,
        "stubborn",
        tiny_model,
        port,
        binary=str(fake_binary(tmp_path)),
        # only the first server is stubborn, so the test's teardown is quick
        env={"FAKE_IGNORE_SIGTERM": "1", "FAKE_FAULT_ONCE": str(tmp_path / "faulted")},
        healthcheck=FAST_HC,
        server={"stop_timeout": 1},
    )
    assert cli("up", "stubborn").returncode == 0
    pid = ps_row(cli, "stubborn")["pid"]

    out = cli("restart", "stubborn")  # SIGTERM ignored: the stop grace ends in SIGKILL

    assert out.returncode == 0, out.stderr
    assert gone(pid)
    row = ps_row(cli, "stubborn")
    assert row["status"] == "running" and row["pid"] != pid and health(port) == 200
    stopped = _reasons(home, "stubborn", "state", new="stopped")
    assert stopped == ["stopped (killed by SIGKILL)"], stopped
    assert _reasons(home, "stubborn", "exit") == []  # a requested stop is not a crash
    assert row["restarts"] == 0


def test_fault_daemon_sigkilled_in_the_middle_of_a_restart(
    cli: Cli, home: Home, tiny_model: Path, tmp_path: Path
) -> None:
    port = free_port()
    write_config(
        home,
        "slow",
        tiny_model,
        port,
        binary=str(_nativefake_binary(tmp_path)),
        env={"FAKE_LOAD_DELAY": "2.5"},
        healthcheck=FAST_HC,
    )
    assert cli("up", "slow").returncode == 0
    old_pid = ps_row(cli, "slow")["pid"]
    daemon = _daemon_pid(home)
    restart = subprocess.Popen(
        [sys.executable, "-m", "llama_orchestrator", "restart", "slow"],
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        loading = wait_for(
            lambda: (
                (r := _record(home, "slow"))["status"] == "starting"
                and r["pid"] not in (None, old_pid)
                and r
            ),
            what="the restart's new server loading",
        )
        new_pid = loading["pid"]
        os.kill(daemon, signal.SIGKILL)
        wait_for(lambda: gone(daemon), what="daemon gone")
        restart.communicate(timeout=30)  # the client notices its daemon died
    finally:
        if restart.poll() is None:
            restart.kill()
            restart.communicate()
    assert restart.returncode != 0
    assert gone(old_pid)
    assert not gone(new_pid)  # the server outlives the daemon

    out = cli("daemon", "start")
    assert out.returncode == 0, out.stderr
    row = wait_for(
        lambda: (r := ps_row(cli, "slow"))["status"] == "running" and r, what="running again"
    )
    assert health(port) == 200
    servers = [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if _has_port_arg(p.info["cmdline"] or [], port) and p.status() != psutil.STATUS_ZOMBIE
    ]
    assert servers == [row["pid"]], servers  # exactly one server: no orphan, no twin
    if row["pid"] == new_pid:  # re-adopted mid-start and watched until ready
        assert _reasons(home, "slow", "adopted")
    else:  # or restarted: then the loading one must be gone
        assert gone(new_pid)


def test_fault_daemon_killed_while_the_cli_waits_is_reported(
    cli: Cli, home: Home, tiny_model: Path, tmp_path: Path
) -> None:
    write_config(
        home,
        "slow",
        tiny_model,
        free_port(),
        binary=str(fake_binary(tmp_path)),
        env={"FAKE_LOAD_DELAY": "60"},
    )
    assert cli("daemon", "start").returncode == 0
    daemon = _daemon_pid(home)
    up = subprocess.Popen(
        [sys.executable, "-m", "llama_orchestrator", "up", "slow"],
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: ps_row(cli, "slow")["status"] == "starting", what="loading")
        os.kill(daemon, signal.SIGKILL)
        _, err = up.communicate(timeout=30)
    finally:
        if up.poll() is None:
            up.kill()
            up.communicate()
    assert up.returncode == 1
    assert "Traceback" not in err, err
    assert "error: slow:" in err and "daemon" in err, err


def _has_port_arg(cmdline: list[str], port: int) -> bool:
    return any(a == "--port" and b == str(port) for a, b in itertools.pairwise(cmdline))


def test_fault_daemon_killed_readopts_a_script_binary(
    cli: Cli, home: Home, tiny_model: Path, tmp_path: Path
) -> None:
    port = free_port()
    write_config(
        home, "wrapped", tiny_model, port, binary=str(fake_binary(tmp_path)), healthcheck=FAST_HC
    )
    assert cli("up", "wrapped").returncode == 0
    pid = ps_row(cli, "wrapped")["pid"]
    daemon = _daemon_pid(home)
    os.kill(daemon, signal.SIGKILL)
    wait_for(lambda: gone(daemon), what="daemon gone")
    assert cli("daemon", "start").returncode == 0
    wait_for(
        lambda: (
            _reasons(home, "wrapped", "adopted") or _record(home, "wrapped")["status"] != "running"
        ),
        what="the new daemon decided",
    )
    row = ps_row(cli, "wrapped")
    assert row["pid"] == pid and row["status"] == "running"  # re-adopted, not orphaned
    assert _reasons(home, "wrapped", "adopted")
    assert cli("down", "wrapped").returncode == 0
    assert gone(pid)


def test_fault_recorded_pid_now_belongs_to_an_unrelated_process(
    cli: Cli, home: Home, tiny_model: Path, stranger_factory: Callable[..., Stranger]
) -> None:
    other_pid, other_port = _bystander(cli, home, tiny_model)
    port = free_port()
    write_config(home, "alpha", tiny_model, port, healthcheck=FAST_HC)
    assert cli("up", "alpha").returncode == 0
    pid = ps_row(cli, "alpha")["pid"]
    assert cli("daemon", "stop").returncode == 0
    assert health(port) == 200  # servers outlive the daemon
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: gone(pid), what="server gone")

    # the PID is "reused" by a stranger; the record keeps the old create time and cmdline
    stranger = stranger_factory()
    with sqlite3.connect(home.db_path) as db:
        db.execute("UPDATE instances SET pid=? WHERE name='alpha'", (stranger.pid,))
    db.close()
    assert _record(home, "alpha")["pid"] == stranger.pid

    assert cli("daemon", "start").returncode == 0
    row = wait_for(
        lambda: (r := ps_row(cli, "alpha"))["status"] == "running" and r, what="alpha restarted"
    )
    assert row["pid"] not in (pid, stranger.pid) and row["desired"] == "running"
    assert health(port) == 200
    stranger.assert_untouched()
    assert "process ended while the daemon was down" in _reasons(home, "alpha", "exit")
    assert not _reasons(home, "alpha", "adopted")
    # the bystander was re-adopted, not restarted
    _assert_undisturbed(cli, home, other_pid, other_port)
    assert _reasons(home, "bystander", "adopted")


def _break_log_folder(home: Home, name: str) -> Path:
    """Make ``logs/<name>`` unusable for the server's log files; returns its path."""
    folder = home.logs_dir / name
    if os.geteuid() == 0:
        # root writes through any permission bits: put a file where the folder should be
        folder.parent.mkdir(parents=True, exist_ok=True)
        folder.write_text("a file where the log folder should be\n")
    else:
        folder.mkdir(parents=True)
        folder.chmod(0o500)
    return folder


def _repair_log_folder(folder: Path) -> None:
    if folder.is_dir():
        folder.chmod(0o700)
    else:
        folder.unlink()


def test_fault_log_folder_unwritable(cli: Cli, home: Home, tiny_model: Path) -> None:
    other_pid, other_port = _bystander(cli, home, tiny_model)
    daemon = _daemon_pid(home)
    port = free_port()
    write_config(
        home,
        "beta",
        tiny_model,
        port,
        healthcheck=FAST_HC,
        restart_policy=dict(QUICK, max_retries=1),
    )
    folder = _break_log_folder(home, "beta")
    try:
        out = cli("up", "beta")
        assert out.returncode == 1
        assert "error: beta: " in out.stderr and str(folder) in out.stderr, out.stderr
        row = ps_row(cli, "beta")
        assert row["pid"] is None and str(folder) in row["last_error"]
        assert _spawns(home, "beta") == 0
        assert health(port) is None
        assert cli("daemon", "status").returncode == 0
        assert _daemon_pid(home) == daemon
        _assert_undisturbed(cli, home, other_pid, other_port)
    finally:
        _repair_log_folder(folder)
    # repaired: up works
    out = cli("up", "beta")
    assert out.returncode == 0, out.stderr
    assert health(port) == 200


def test_fault_log_folder_unwritable_settles_instead_of_backoff_forever(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    write_config(
        home,
        "beta",
        tiny_model,
        free_port(),
        healthcheck=FAST_HC,
        restart_policy=dict(QUICK, max_retries=1),
    )
    folder = _break_log_folder(home, "beta")
    try:
        assert cli("up", "beta").returncode == 1
        # "backoff ... restarting in 0.0s" must lead somewhere: retried, then fatal
        wait_for(lambda: ps_row(cli, "beta")["status"] == "fatal", timeout=5, what="fatal")
    finally:
        _repair_log_folder(folder)
