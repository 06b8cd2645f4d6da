"""``ps``: filters, the fast path and the full CLI agreeing, colours, records without daemon."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Cli, free_port, write_config

from llama_orchestrator.cli.fast import try_fast
from llama_orchestrator.home import Home
from llama_orchestrator.views.table import FilterError, parse_filters, render_table, select

ROWS = [
    {
        "name": "a",
        "pid": 10,
        "port": 8001,
        "backend": "cpu",
        "device": "-",
        "model": "m",
        "status": "running",
        "health": "healthy",
        "uptime_s": 75.0,
        "restarts": 0,
        "desired": "running",
    },
    {
        "name": "b",
        "pid": None,
        "port": 8002,
        "backend": "vulkan",
        "device": "GPU:1",
        "model": "m",
        "status": "stopped",
        "health": "unknown",
        "uptime_s": None,
        "restarts": 0,
        "desired": "stopped",
    },
    {
        "name": "c",
        "pid": None,
        "port": 8003,
        "backend": "cpu",
        "device": "-",
        "model": "m",
        "status": "fatal",
        "health": "error",
        "uptime_s": None,
        "restarts": 5,
        "desired": "running",
    },
]


def test_filters_select_rows() -> None:
    assert [r["name"] for r in select(ROWS, False, {})] == ["a", "c"]  # stopped hidden
    assert [r["name"] for r in select(ROWS, True, {})] == ["a", "b", "c"]
    assert [r["name"] for r in select(ROWS, False, parse_filters(["status=stopped"]))] == ["b"]
    both = parse_filters(["status=running", "status=fatal"])
    assert [r["name"] for r in select(ROWS, False, both)] == ["a", "c"]
    anded = parse_filters(["backend=cpu", "desired=running", "health=error"])
    assert [r["name"] for r in select(ROWS, True, anded)] == ["c"]
    for bad in ("status", "=x", "colour=red", "status="):
        with pytest.raises(FilterError, match="KEY=VALUE"):
            parse_filters([bad])


def test_table_colours_only_when_asked() -> None:
    plain = render_table(ROWS, color=False)
    assert "\x1b[" not in plain
    lines = plain.splitlines()
    assert lines[0].split() == [
        "NAME",
        "PID",
        "PORT",
        "BACKEND",
        "DEVICE",
        "MODEL",
        "STATUS",
        "HEALTH",
        "UPTIME",
        "RESTARTS",
    ]
    assert lines[1].split() == [
        "a",
        "10",
        "8001",
        "cpu",
        "-",
        "m",
        "running",
        "healthy",
        "1m",
        "15s",
        "0",
    ]
    coloured = render_table(ROWS, color=True)
    assert "\x1b[32mrunning\x1b[0m" in coloured  # green
    assert "\x1b[2mstopped\x1b[0m" in coloured  # dim
    assert "\x1b[31mfatal\x1b[0m" in coloured and "\x1b[31merror\x1b[0m" in coloured  # red
    # columns stay aligned with colour codes: same visible width per line
    strip = [
        line.replace("\x1b[32m", "")
        .replace("\x1b[2m", "")
        .replace("\x1b[31m", "")
        .replace("\x1b[0m", "")
        for line in coloured.splitlines()
    ]
    assert strip == plain.splitlines()


def test_fast_path_takes_only_plain_ps() -> None:
    assert try_fast(["up", "x"]) is None
    assert try_fast(["ps", "--help"]) is None
    assert try_fast(["ps", "--bogus"]) is None
    assert try_fast(["--version"]) is None


def test_ps_fast_and_full_paths_agree(cli: Cli, home: Home, tiny_model: Path) -> None:
    write_config(home, "alpha", tiny_model, free_port())
    write_config(home, "beta", tiny_model, free_port())
    assert cli("up", "alpha").returncode == 0
    fast = cli("ps", "-a", "--json")
    assert fast.returncode == 0
    # the same command through the full Typer CLI, bypassing the fast path
    full = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from llama_orchestrator.cli.app import main; sys.argv[0]='llama-orch'; "
            "main()",
            "ps",
            "--all",
            "--json",
        ],
        env=cli.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert full.returncode == 0, full.stderr
    strip = [{k: v for k, v in r.items() if k != "uptime_s"} for r in json.loads(fast.stdout)]
    assert strip == [
        {k: v for k, v in r.items() if k != "uptime_s"} for r in json.loads(full.stdout)
    ]
    assert [r["status"] for r in json.loads(fast.stdout)] == ["running", "stopped"]
    only = cli("ps", "--filter", "status=stopped", "-q")
    assert only.stdout.split() == ["beta"]
    bad = cli("ps", "--filter", "nope")
    assert bad.returncode == 2 and "KEY=VALUE" in bad.stderr
    # from the records, saying so, when the daemon is down
    assert cli("daemon", "stop").returncode == 0
    down = cli("ps")
    assert down.returncode == 0 and "daemon is not running" in down.stderr
    assert down.stdout.splitlines()[1].split()[0] == "alpha"


def test_daemon_identity_by_start_ticks(home: Home) -> None:
    """The pid file's start ticks pin the daemon: a live PID with other ticks is stale."""
    import os

    from llama_orchestrator.client.control import daemon_status, proc_start_ticks

    ticks = proc_start_ticks(os.getpid())
    if ticks is None:
        pytest.skip("no /proc on this system: psutil's create time is used instead")
    home.ensure()
    record = {"pid": os.getpid(), "create_time": 0.0, "start_ticks": ticks}
    home.daemon_pid_path.write_text(json.dumps(record))
    assert daemon_status(home).running  # this very process, by its start ticks
    home.daemon_pid_path.write_text(json.dumps(dict(record, start_ticks=ticks + 1)))
    status = daemon_status(home)
    assert not status.running and status.stale_pid_file  # same PID, another process


def test_ps_marks_an_instance_whose_config_was_removed(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    import shutil

    write_config(home, "alpha", tiny_model, free_port())
    write_config(home, "beta", tiny_model, free_port())
    assert cli("up", "alpha", "beta").returncode == 0
    # removed while no daemon watches (a running daemon stops its server: issue 11)
    assert cli("daemon", "stop").returncode == 0
    shutil.rmtree(home.instance_dir("alpha"))
    rows = {r["name"]: r for r in cli.json("ps", "--json")}
    assert rows["alpha"]["config_removed"] is True and rows["alpha"]["status"] == "running"
    assert rows["beta"]["config_removed"] is False
    table = cli("ps").stdout.splitlines()
    alpha = next(line for line in table if line.startswith("alpha"))
    beta = next(line for line in table if line.startswith("beta"))
    assert "running (config removed)" in alpha and "config removed" not in beta
    # the filter still matches the plain status
    assert cli("ps", "-q", "--filter", "status=running").stdout.split() == ["alpha", "beta"]
