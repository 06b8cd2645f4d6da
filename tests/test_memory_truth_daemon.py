"""Memory truth with a real server behind the daemon (issue 18): a running CPU instance
is measured (its process tree's PSS), and ps --json, describe (JSON and text), stats, the
events and /metrics show the estimate and the measurement side by side."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from conftest import Cli, free_port, write_config
from helpers import events, ps_row, wait_for

from llama_orchestrator.home import Home


def test_a_running_instance_is_measured_and_shown_beside_its_estimate(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    port = free_port()
    home.root.mkdir(parents=True, exist_ok=True)
    (home.root / "gateway.json").write_text(json.dumps({"port": port}))
    write_config(home, "alpha", tiny_model, free_port())
    assert cli("up", "alpha").returncode == 0
    row = wait_for(
        lambda: (r := ps_row(cli, "alpha"))["memory"].get("cpu", {}).get("measured_mb") and r,
        what="alpha's first memory reading in ps --json",
    )
    cpu = row["memory"]["cpu"]
    assert cpu["estimate_mb"] >= 1 and cpu["source"] == "host"
    # the embedded engine's process: its Python and the wheel are in the reading
    assert cpu["peak_mb"] >= cpu["measured_mb"] > cpu["estimate_mb"]
    described = json.loads(cli("describe", "alpha", "--json").stdout)
    assert described["memory"]["cpu"]["peak_mb"] >= cpu["peak_mb"]
    text = cli("describe", "alpha").stdout
    assert "Memory (MiB):    estimate   measured       peak" in text
    assert any(line.strip().startswith("cpu:") for line in text.splitlines())
    first = [e for e in events(home, "alpha") if e["kind"] == "memory"]
    assert len(first) == 1 and first[0]["reason"].startswith("cpu: measured ")
    (stats,) = json.loads(cli("stats", "--no-stream", "--json").stdout)
    assert stats["estimate_host_bytes"] == cpu["estimate_mb"] * 2**20
    assert stats["estimate_vram_bytes"] is None  # a CPU instance
    assert "EST RAM" in cli("stats", "--no-stream").stdout
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10, trust_env=False)
    for line in (
        'llama_orch_instance_memory_bytes{device="cpu",instance="alpha",kind="measured"}',
        'llama_orch_instance_memory_bytes{device="cpu",instance="alpha",kind="estimate"}',
        'llama_orch_device_overhead_bytes{device="cpu"}',
    ):
        assert line in metrics.text, line
