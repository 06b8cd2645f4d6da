"""Signals are owned by the daemon's loop (issue 8): handlers only record, the loop acts.

SIGTERM stops the daemon cleanly (exit 0, pid and endpoint files removed, servers left
running); SIGHUP reloads the configs; the shutdown endpoint takes the SIGTERM path.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Cli, free_port, write_config
from helpers import events, health, ps_row, wait_for

from llama_orchestrator.home import Home

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX signals")


def _daemon(cli: Cli) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_orchestrator", "daemon", "run"],
        env=cli.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    wait_for(lambda: cli.home.daemon_endpoint_path.exists(), what="daemon listening")
    return proc


def test_sigterm_stops_the_daemon_cleanly_and_leaves_servers_running(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    port = free_port()
    write_config(home, "alpha", tiny_model, port)
    daemon = _daemon(cli)
    assert cli("up", "alpha").returncode == 0
    pid = ps_row(cli, "alpha")["pid"]
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(30) == 0, daemon.stderr.read().decode() if daemon.stderr else ""
    assert not home.daemon_pid_path.exists() and not home.daemon_endpoint_path.exists()
    assert health(port) == 200  # the server outlives the daemon
    assert cli("up", "alpha").returncode == 0  # a new daemon re-adopts it
    assert ps_row(cli, "alpha")["pid"] == pid


def test_sighup_reloads_configs(cli: Cli, home: Home, tiny_model: Path) -> None:
    daemon = _daemon(cli)
    try:
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: any(e["kind"] == "config" for e in events(home, "")), what="reload event")
        assert daemon.poll() is None  # HUP does not stop it
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0


def test_shutdown_endpoint_takes_the_sigterm_path(cli: Cli, home: Home) -> None:
    daemon = _daemon(cli)
    assert cli("daemon", "stop").returncode == 0
    assert daemon.wait(30) == 0
    assert not home.daemon_pid_path.exists()
