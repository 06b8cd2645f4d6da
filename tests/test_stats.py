"""``llama-orch stats``: CPU, RSS, VRAM, requests in flight and tokens/s per running
instance, like ``docker stats`` (issue 10: what a Docker or pm2 user misses)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

from conftest import Cli, free_port, write_config
from helpers import ps_row, wait_for

from llama_orchestrator.home import Home

HEADER = ("NAME", "PID", "CPU %", "RSS", "VRAM", "IN FLIGHT", "TOK/S")


def _gateway_on_a_free_port(home: Home) -> int:
    port = free_port()
    home.root.mkdir(parents=True, exist_ok=True)
    (home.root / "gateway.json").write_text(json.dumps({"port": port}))
    return port


def test_stats_no_stream_shows_each_running_instance_once(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    _gateway_on_a_free_port(home)
    write_config(home, "alpha", tiny_model, free_port())
    write_config(home, "beta", tiny_model, free_port())
    assert cli("up", "alpha").returncode == 0
    pid = ps_row(cli, "alpha")["pid"]

    rows = cli.json("stats", "--no-stream", "--json")
    assert [r["name"] for r in rows] == ["alpha"]  # beta never ran
    row = rows[0]
    assert row["pid"] == pid
    assert isinstance(row["cpu_percent"], float) and row["cpu_percent"] >= 0
    assert row["rss_bytes"] > 1_000_000
    assert row["in_flight"] == 0  # the gateway listens and knows the instance
    assert row["tokens_per_s"] is None or row["tokens_per_s"] >= 0
    assert row["vram_bytes"] is None or row["vram_bytes"] >= 0

    out = cli("stats", "--no-stream")
    assert out.returncode == 0, out.stderr
    header, line = out.stdout.splitlines()
    assert all(col in header for col in HEADER)
    assert line.split()[:2] == ["alpha", str(pid)] and "MiB" in line

    out = cli("stats", "--no-stream", "beta")
    assert out.returncode == 0 and "beta is not running" in out.stderr
    assert [line.split()[0] for line in out.stdout.splitlines()] == ["NAME"]  # no rows
    out = cli("stats", "--no-stream", "nope")
    assert out.returncode == 1 and "no instance named 'nope'" in out.stderr
    assert "Traceback" not in out.stderr


def test_stats_streams_until_ctrl_c(cli: Cli, home: Home, tiny_model: Path) -> None:
    write_config(home, "alpha", tiny_model, free_port())
    assert cli("up", "alpha").returncode == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_orchestrator", "stats", "--json", "alpha"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=cli.env,
        text=True,
    )
    frames: list[list[dict[str, object]]] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            frames.append(json.loads(line))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_for(lambda: len(frames) >= 2, 20, "two refreshes")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0 and "Traceback" not in err
    assert all([r["name"] for r in frame] == ["alpha"] for frame in frames)


def test_vram_per_process_from_nvidia_smi() -> None:
    from llama_orchestrator.cli.stats_data import parse_compute_apps

    text = "1234, 500\n4321, [N/A]\n\n1234, 12\nnot a line\n"
    assert parse_compute_apps(text) == {1234: 512 * 1024 * 1024}


def test_stats_takes_vram_and_gateway_figures_per_process(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    from llama_orchestrator.cli.stats_cmd import render
    from llama_orchestrator.cli.stats_data import MIB, Sampler

    write_config(home, "alpha", tiny_model, free_port())
    assert cli("up", "alpha").returncode == 0
    pid = ps_row(cli, "alpha")["pid"]
    sampler = Sampler(
        home,
        vram=lambda: {pid: 5 * MIB, 1: 7 * MIB},  # pid 1 is no server of ours
        gateway=lambda: {"in_flight": {"alpha": 2}, "tokens_per_s": {"alpha": 12.5}},
    )
    assert sampler.running() == ["alpha"]
    (row,) = sampler.sample()
    assert (row["vram_bytes"], row["in_flight"], row["tokens_per_s"]) == (5 * MIB, 2, 12.5)
    line = render([row]).splitlines()[1]
    assert "5.0MiB" in line and "12.5" in line
    # a server that is gone leaves the table at the next sample
    assert cli("down", "alpha").returncode == 0
    assert sampler.sample() == []
