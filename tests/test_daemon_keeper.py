"""The daemon comes back by itself: its keeper starts it again after a crash (issue 19,
item 3), and `daemon stop` stops both."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from conftest import Cli, free_port, write_config
from helpers import gone, health, ps_row, wait_for

from llama_orchestrator.daemon.keeper import keeper_path
from llama_orchestrator.home import Home

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX signals")

DEADLINE_S = 10.0  # the target is 2 s; a loaded 2-core test machine gets slack


def _pid(path: Path) -> int:
    return int(json.loads(path.read_text())["pid"])


def test_a_killed_daemon_is_back_serving_with_no_command(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    port = free_port()
    write_config(home, "alpha", tiny_model, free_port())
    (home.root / "gateway.json").write_text(json.dumps({"port": port}))
    assert cli("up", "alpha").returncode == 0
    server = ps_row(cli, "alpha")["pid"]
    wait_for(lambda: health(port) == 200, what="the gateway serving")
    worker = _pid(home.daemon_pid_path)
    keeper = _pid(keeper_path(home))
    assert keeper != worker

    os.kill(worker, signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: gone(worker), what="the daemon gone")
    wait_for(
        lambda: health(port) == 200 and _pid(home.daemon_pid_path) != worker,
        timeout=DEADLINE_S,
        what="the gateway serving again",
    )
    print(f"serving again {time.monotonic() - killed:.2f}s after the kill")
    assert _pid(keeper_path(home)) == keeper  # the same keeper, a new daemon
    row = ps_row(cli, "alpha")
    assert row["pid"] == server and row["status"] == "running"  # re-adopted, not restarted

    new_worker = _pid(home.daemon_pid_path)
    assert cli("daemon", "stop").returncode == 0
    wait_for(lambda: gone(new_worker) and gone(keeper), what="daemon and keeper stopped")
    assert not keeper_path(home).exists()
    assert health(port) is None
    assert not gone(server)  # servers outlive the daemon, as ever


def test_a_second_daemon_run_refuses_and_leaves_the_first(cli: Cli, home: Home) -> None:
    assert cli("daemon", "start").returncode == 0
    worker = _pid(home.daemon_pid_path)
    second = cli("daemon", "run")
    assert second.returncode == 1 and "already running" in second.stderr
    assert not gone(worker)
    assert cli("daemon", "status").returncode == 0
