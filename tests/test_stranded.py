"""Nothing stranded (issue 10): a server the orchestrator started stays visible and
stoppable by a command, whatever happened to its config or the daemon meanwhile."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest
from conftest import Cli, free_port, write_config
from helpers import events, gone, health, ps_row, wait_for

from llama_orchestrator.home import Home

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
FAST_HC = {"interval": 0.5, "timeout": 1, "retries": 2, "start_period": 30}


def test_adopted_server_with_an_invalid_config_is_still_watched(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    port = free_port()
    cfg = write_config(home, "alpha", tiny_model, port, healthcheck=FAST_HC)
    assert cli("up", "alpha").returncode == 0
    pid = ps_row(cli, "alpha")["pid"]
    assert cli("daemon", "stop").returncode == 0
    cfg.write_text('{"name": "alpha", "model": {"path": 3}}')  # no longer valid
    assert cli("daemon", "start").returncode == 0
    assert ps_row(cli, "alpha")["pid"] == pid  # re-adopted from its record alone
    os.kill(pid, signal.SIGKILL)
    row = wait_for(
        lambda: (r := ps_row(cli, "alpha"))["pid"] is None and r["status"] != "running" and r,
        what="the death noticed",
    )
    assert row["health"] != "healthy"
    # the invalid config blocks the next start, with its error shown
    row = wait_for(
        lambda: "invalid config" in ((r := ps_row(cli, "alpha"))["last_error"] or "") and r,
        what="the config error",
    )
    assert "model.path" in row["last_error"]


def test_instance_folder_removed_while_running_stays_controllable(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    port = free_port()
    write_config(home, "alpha", tiny_model, port)
    assert cli("up", "alpha").returncode == 0
    pid = ps_row(cli, "alpha")["pid"]
    # removed while no daemon watches (a running daemon stops its server: issue 11)
    assert cli("daemon", "stop").returncode == 0
    shutil.rmtree(home.instance_dir("alpha"))
    assert ps_row(cli, "alpha")["pid"] == pid  # still listed
    out = cli("down", "alpha")
    assert out.returncode == 0, out.stderr
    wait_for(lambda: gone(pid), what="server stopped")
    assert health(port) is None
    out = cli("rm", "alpha")
    assert out.returncode == 0, out.stderr
    rows = cli.json("ps", "--all", "--json")
    assert all(r["name"] != "alpha" for r in rows)


def test_down_all_reaches_a_server_whose_folder_was_removed(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    write_config(home, "alpha", tiny_model, free_port())
    write_config(home, "beta", tiny_model, free_port())
    assert cli("up", "alpha", "beta").returncode == 0
    pid = ps_row(cli, "alpha")["pid"]
    assert cli("daemon", "stop").returncode == 0  # else the daemon stops it itself (issue 11)
    shutil.rmtree(home.instance_dir("alpha"))
    assert cli("down", "--all").returncode == 0
    wait_for(lambda: gone(pid), what="the removed instance's server stopped")


def test_rm_refuses_a_running_instance_without_force(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    port = free_port()
    write_config(home, "alpha", tiny_model, port)
    assert cli("up", "alpha").returncode == 0
    out = cli("rm", "alpha")
    assert out.returncode == 1 and "rm --force alpha" in out.stderr
    assert health(port) == 200 and home.config_path("alpha").exists()
    log_dir = home.logs_dir / "alpha"
    assert log_dir.is_dir()
    out = cli("rm", "--force", "alpha")
    assert out.returncode == 0, out.stderr
    assert not home.instance_dir("alpha").exists() and health(port) is None
    assert log_dir.is_dir()  # logs are kept without --logs
    assert cli("rm", "alpha").returncode == 1  # gone: an unknown instance now


def test_rm_logs_removes_the_logs_too(cli: Cli, home: Home, tiny_model: Path) -> None:
    write_config(home, "alpha", tiny_model, free_port())
    assert cli("up", "alpha").returncode == 0
    assert cli("down", "alpha").returncode == 0
    out = cli("rm", "--logs", "alpha")
    assert out.returncode == 0 and "logs" in out.stderr
    assert not (home.logs_dir / "alpha").exists()


def test_state_database_deleted_while_the_daemon_runs_is_recreated(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    port = free_port()
    write_config(home, "alpha", tiny_model, port)
    assert cli("up", "alpha").returncode == 0
    pid = ps_row(cli, "alpha")["pid"]
    home.db_path.unlink()
    # the daemon notices, writes what it knows, and says so
    row = wait_for(
        lambda: home.db_path.exists() and (r := ps_row(cli, "alpha"))["pid"] == pid and r,
        what="the database recreated",
    )
    assert row["status"] == "running" and row["desired"] == "running"
    reasons = [e["reason"] for e in events(home, "")]
    assert any("recreated from the daemon's memory" in str(r) for r in reasons), reasons
    assert cli("down", "alpha").returncode == 0
    wait_for(lambda: gone(pid), what="stopped through the recreated records")


def test_a_daemon_over_an_empty_database_readopts_its_servers(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    port = free_port()
    write_config(home, "alpha", tiny_model, port)
    assert cli("up", "alpha").returncode == 0
    pid = ps_row(cli, "alpha")["pid"]
    assert cli("daemon", "stop").returncode == 0
    for suffix in ("", "-wal", "-shm"):
        Path(f"{home.db_path}{suffix}").unlink(missing_ok=True)
    out = cli("up", "alpha")  # not "port in use by" its own server
    assert out.returncode == 0, out.stderr
    row = ps_row(cli, "alpha")
    assert row["pid"] == pid and row["status"] == "running"
    assert health(port) == 200
    assert any(e["kind"] == "adopted" for e in events(home, "alpha"))


def test_a_server_spawned_but_never_recorded_is_readopted(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    """The daemon ended between a spawn and its record (killed, or stopped while the spawn
    ran in its thread): its row has no PID, but the server carries the home's marker. The
    next daemon records and adopts it; `up` does not take it for a stranger on the port."""
    from llama_orchestrator.state.db import StateStore

    port = free_port()
    write_config(home, "alpha", tiny_model, port)
    assert cli("up", "alpha").returncode == 0
    pid = ps_row(cli, "alpha")["pid"]
    assert cli("daemon", "stop").returncode == 0
    store = StateStore(home.db_path)
    try:
        store.update("alpha", status="starting", pid=None, pid_create_time=None)
    finally:
        store.close()
    out = cli("up", "alpha")
    assert out.returncode == 0, out.stderr
    row = ps_row(cli, "alpha")
    assert row["pid"] == pid and row["status"] == "running", row
    assert health(port) == 200
    reasons = [str(e["reason"]) for e in events(home, "alpha")]
    assert any("had no record of this run" in r for r in reasons), reasons
    assert cli("down", "alpha").returncode == 0
    wait_for(lambda: gone(pid), what="stopped as an adopted server")
