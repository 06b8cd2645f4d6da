"""Messages that read right (issue 10, item 17): one suggestion for a typo, start/stop as
aliases, one "started the daemon", bracketed IPv6 URLs, one-line errors, health and
event wording."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import Cli, free_port, write_config
from helpers import ps_row, wait_for

from llama_orchestrator.home import Home


def test_only_the_cli_that_started_the_daemon_says_so(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    write_config(home, "alpha", tiny_model, free_port())
    with ThreadPoolExecutor(5) as pool:
        outs = list(pool.map(lambda _: cli("up", "alpha", "--detach"), range(5)))
    assert all(o.returncode == 0 for o in outs), [o.stderr for o in outs]
    assert sum("started the daemon" in o.stderr for o in outs) == 1, [o.stderr for o in outs]


def test_a_mistyped_command_gets_one_suggestion(cli: Cli) -> None:
    for args, suggested in ((["restrat"], "'restart'"), (["daemon", "stpo"], "'stop'")):
        out = cli(*args)
        assert out.returncode == 2
        assert out.stderr.count("Did you mean") == 1, out.stderr
        assert suggested in out.stderr


def test_start_and_stop_are_aliases_of_up_and_down(cli: Cli, home: Home, tiny_model: Path) -> None:
    write_config(home, "alpha", tiny_model, free_port())
    out = cli("start", "alpha")
    assert out.returncode == 0, out.stderr
    assert "ready in" in out.stderr and ps_row(cli, "alpha")["status"] == "running"
    out = cli("stop", "alpha")
    assert out.returncode == 0, out.stderr
    assert ps_row(cli, "alpha")["status"] == "stopped"
    listing = cli("--help").stdout
    up_line = next(line for line in listing.splitlines() if line.split()[:1] == ["up"])
    down_line = next(line for line in listing.splitlines() if line.split()[:1] == ["down"])
    assert "alias: start" in up_line and "alias: stop" in down_line


def test_urls_of_ipv6_hosts_are_bracketed(capsys: pytest.CaptureFixture[str]) -> None:
    from llama_orchestrator.cli.lifecycle import _report

    body = {"ok": True, "ready_ms": 1234.0, "pid": 7, "instance": {"host": "::1", "port": 8001}}
    assert _report("alpha", body, "starting")
    assert "http://[::1]:8001" in capsys.readouterr().err
    body["instance"] = {"host": "127.0.0.1", "port": 8001}
    assert _report("alpha", body, "starting")
    assert "http://127.0.0.1:8001" in capsys.readouterr().err


@pytest.mark.skipif(sys.platform != "linux", reason="finds the port's holder through /proc")
def test_a_port_holder_with_a_multiline_command_line_keeps_the_error_on_one_line(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    port = free_port()
    code = (
        "import socket, time\n"
        "s = socket.socket()\n"
        f"s.bind(('127.0.0.1', {port}))\n"
        "s.listen()\n"
        "time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code])
    try:
        wait_for(lambda: _listening(port), what="the holder listening")
        write_config(home, "alpha", tiny_model, port)
        out = cli("up", "alpha")
        assert out.returncode == 1
        lines = out.stderr.splitlines()
        error = next(line for line in lines if "already in use" in line)
        assert error.startswith("error: alpha: ") and "time.sleep(60)" in error, out.stderr
        assert not any(line.startswith("s = socket") for line in lines), out.stderr
    finally:
        holder.kill()
        holder.wait(10)


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_health_of_a_never_checked_instance_shows_no_last_check(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    write_config(home, "beta", tiny_model, free_port())
    assert cli("daemon", "start").returncode == 0
    out = cli("health", "beta")
    assert out.returncode == 0, out.stderr
    assert "Last check" not in out.stdout and "has not been started yet" in out.stderr


def test_health_without_checks_since_the_daemon_started_says_so() -> None:
    from llama_orchestrator.cli.health_cmd import render_health

    data = {
        "name": "alpha",
        "status": "running",
        "health": "healthy",
        "consecutive_failures": 0,
        "retries": 3,
        "last_health_check": 1_900_000_000.0,
        "checks": [],
        "live": True,
    }
    text = "\n".join(render_health("alpha", data))
    assert "Last check:" in text
    assert "none yet" not in text and "none kept yet (the daemon keeps them in memory" in text
    data["last_health_check"] = None
    text = "\n".join(render_health("alpha", data))
    assert "Last check" not in text and "none yet" in text


def test_an_exit_while_the_daemon_was_down_reads_naturally() -> None:
    from llama_orchestrator.views.describe_text import event_line

    exited = {
        "ts": 1_900_000_000.0,
        "kind": "exit",
        "old": "running",
        "new": "exited",
        "reason": "process ended while the daemon was down",
    }
    line = event_line(exited)
    assert "pid exited" not in line and "running -> exited" in line
    assert "process ended while the daemon was down" in line
    spawned = dict(exited, kind="spawned", old=None, new="4242", reason="llama-server -m x")
    assert "pid 4242" in event_line(spawned)
    state = dict(exited, kind="state", old="starting", new="running", reason="ready")
    assert "starting -> running" in event_line(state)


def test_top_points_to_stats_not_stop(cli: Cli) -> None:
    """Issue 19, item 13: `top` got "Did you mean 'stop'?"."""
    out = cli("top")
    assert out.returncode == 2
    assert "llama-orch stats" in out.stderr and "'stop'" not in out.stderr
