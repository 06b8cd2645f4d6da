"""The gateway's ``GET /metrics`` (issue 12): a real daemon, real servers, the exposition
read back with prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import httpx
from conftest import Cli, free_port, write_config
from helpers import LETTERS, wait_for
from prometheus_client.parser import text_string_to_metric_families

from llama_orchestrator.clock import FakeClock
from llama_orchestrator.daemon.api.metrics_watch import CheckWatch, LoadWatch
from llama_orchestrator.daemon.events import Event, EventKind
from llama_orchestrator.gateway.metrics import GatewayMetrics
from llama_orchestrator.home import Home

KEY = "sk-metrics-test"

# The issue's list (issue 12): each sample name and the labels it must carry.
ISSUE_12_NAMES: dict[str, set[str]] = {
    "llamacpp:prompt_tokens_total": {"instance"},
    "llamacpp:tokens_predicted_total": {"instance"},
    "llamacpp:requests_processing": {"instance"},
    "llamacpp:requests_deferred": {"instance"},
    "llama_orch_requests_total": {"model", "instance", "code"},
    "llama_orch_request_duration_seconds_bucket": {"model", "instance", "le"},
    "llama_orch_time_to_first_byte_seconds_bucket": {"model", "instance", "le"},
    "llama_orch_queue_depth": {"model"},
    "llama_orch_in_flight": {"instance"},
    "llama_orch_loads_total": {"instance"},
    "llama_orch_load_seconds_bucket": {"instance", "le"},
    "llama_orch_evictions_total": set(),
    "llama_orch_instance_up": {"instance"},
    "llama_orch_instance_state": {"instance", "state"},
    "llama_orch_restarts_total": {"instance"},
    "llama_orch_health_check_seconds_bucket": {"instance", "kind", "le"},
    "llama_orch_instance_memory_estimate_bytes": {"instance", "device"},
    "llama_orch_memory_budget_bytes": {"device"},
}


def gateway(home: Home, **settings: Any) -> str:
    port = free_port()
    home.root.mkdir(parents=True, exist_ok=True)
    (home.root / "gateway.json").write_text(json.dumps({"port": port, **settings}))
    return f"http://127.0.0.1:{port}"


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)], parsed by prometheus_client."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def get_metrics(url: str, key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.get(url + "/metrics", headers=headers, timeout=30, trust_env=False)


def complete(url: str, model: str) -> None:
    r = httpx.post(
        url + "/v1/completions",
        json={"model": model, "prompt": "hello", "max_tokens": 3, **LETTERS},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=60,
        trust_env=False,
    )
    assert r.status_code == 200, r.text


def test_metrics_behind_the_keys_with_gateway_supervisor_and_llamacpp_figures(
    cli: Cli, home: Home, tiny_model: Path, llama_server_bin: Path
) -> None:
    cli.env["LLAMA_SERVER"] = str(llama_server_bin)
    url = gateway(home, api_keys=[KEY], memory_budget_mb={"cpu": 4096})
    # no --metrics in args: every instance gets it (issue 12)
    write_config(home, "alpha", tiny_model, free_port(), healthcheck={"interval": 0.2})
    write_config(home, "beta", tiny_model, free_port())
    assert cli("up", "alpha").returncode == 0
    complete(url, "alpha")
    described = cli("describe", "alpha")
    assert "Metrics:        /metrics (enabled automatically)" in described.stdout.splitlines()

    assert get_metrics(url).status_code == 401
    assert get_metrics(url, "wrong").status_code == 401
    r = get_metrics(url, KEY)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")

    def checked() -> dict[str, list[tuple[dict[str, str], float]]] | None:
        got = samples(get_metrics(url, KEY).text)
        return got if got.get("llama_orch_health_check_seconds_count") else None

    got = wait_for(checked, 30, "a health check in the exposition")
    for name, labels in ISSUE_12_NAMES.items():
        assert name in got, f"{name} missing from the exposition"
        for found, _v in got[name]:
            assert set(found) == labels, (name, found)

    # one load of alpha, timed from its start to ready; beta never loaded
    assert got["llama_orch_loads_total"] == [({"instance": "alpha"}, 1.0)]
    assert got["llama_orch_load_seconds_count"] == [({"instance": "alpha"}, 1.0)]
    assert got["llama_orch_load_seconds_sum"][0][1] > 0
    checks = {lb["kind"]: v for lb, v in got["llama_orch_health_check_seconds_count"]}
    assert checks["health"] >= 1 and got["llama_orch_health_check_seconds_sum"][0][1] > 0

    assert ({"model": "alpha", "instance": "alpha", "code": "200"}, 1.0) in got[
        "llama_orch_requests_total"
    ]
    for hist in ("llama_orch_request_duration_seconds", "llama_orch_time_to_first_byte_seconds"):
        counts = got[f"{hist}_count"]
        assert ({"model": "alpha", "instance": "alpha"}, 1.0) in counts, counts
        assert any(labels.get("le") == "+Inf" for labels, _v in got[f"{hist}_bucket"])
    assert ({"model": "alpha"}, 0.0) in got["llama_orch_queue_depth"]
    assert ({"instance": "alpha"}, 0.0) in got["llama_orch_in_flight"]
    assert got["llama_orch_evictions_total"] == [({}, 0.0)]

    assert ({"instance": "alpha"}, 1.0) in got["llama_orch_instance_up"]
    assert ({"instance": "beta"}, 0.0) in got["llama_orch_instance_up"]
    states = {(lb["instance"], lb["state"]): v for lb, v in got["llama_orch_instance_state"]}
    assert states[("alpha", "running")] == 1 and states[("alpha", "stopped")] == 0
    assert states[("beta", "stopped")] == 1
    assert ({"instance": "alpha"}, 0.0) in got["llama_orch_restarts_total"]
    memory = {lb["instance"]: v for lb, v in got["llama_orch_instance_memory_estimate_bytes"]}
    assert set(memory) == {"alpha"} and memory["alpha"] > 0
    assert got["llama_orch_memory_budget_bytes"] == [({"device": "cpu"}, 4096 * 2**20)]

    # llama-server's own figures, with the instance they came from; beta is not running
    prompt = got["llamacpp:prompt_tokens_total"]
    assert [labels["instance"] for labels, _v in prompt] == ["alpha"]
    assert prompt[0][1] > 0
    assert "llamacpp:requests_processing" in got


def test_metrics_public_opens_it_without_a_key(cli: Cli, home: Home, tiny_model: Path) -> None:
    url = gateway(home, api_keys=[KEY], metrics_public=True)
    write_config(home, "alpha", tiny_model, free_port())
    assert cli("up", "alpha").returncode == 0
    r = get_metrics(url)
    assert r.status_code == 200, r.text
    got = samples(r.text)
    assert ({"instance": "alpha"}, 1.0) in got["llama_orch_instance_up"]
    # the embedded engine (xllamacpp) serves its llama.cpp metrics too
    assert [lb["instance"] for lb, _v in got["llamacpp:prompt_tokens_total"]] == ["alpha"]
    # the rest of the gateway keeps its keys
    r = httpx.get(url + "/v1/models", timeout=10, trust_env=False)
    assert r.status_code == 401


def test_without_keys_metrics_are_open(cli: Cli, home: Home, tiny_model: Path) -> None:
    url = gateway(home)
    write_config(home, "alpha", tiny_model, free_port())
    assert cli("up", "alpha").returncode == 0
    assert get_metrics(url).status_code == 200


def test_a_hung_or_gone_instance_leaves_a_gap_not_a_hung_scrape() -> None:
    hung = socket.socket()  # accepts connections (the backlog), never answers
    hung.bind(("127.0.0.1", 0))
    hung.listen(8)
    gone = free_port()

    async def run() -> str:
        metrics = GatewayMetrics(lambda: {"alpha": 2}, lambda: {"alpha": 1})
        metrics.timeout = 0.2
        metrics.targets = lambda: {
            "hung": (f"http://127.0.0.1:{hung.getsockname()[1]}", None),
            "gone": (f"http://127.0.0.1:{gone}", None),
        }
        return (await asyncio.wait_for(metrics.exposition(), 30)).decode()

    try:
        got = samples(asyncio.run(run()))
    finally:
        hung.close()
    assert got["llama_orch_queue_depth"] == [({"model": "alpha"}, 2.0)]
    assert got["llama_orch_in_flight"] == [({"instance": "alpha"}, 1.0)]
    assert not any(name.startswith("llamacpp:") for name in got)


def test_the_hook_failing_leaves_its_families_out() -> None:
    def broken() -> list[Any]:
        raise RuntimeError("boom")

    metrics = GatewayMetrics(lambda: {"alpha": 0}, dict)
    metrics.extra = broken
    got = samples(asyncio.run(metrics.exposition()).decode())
    assert got["llama_orch_queue_depth"] == [({"model": "alpha"}, 0.0)]
    assert not any(n.startswith("llama_orch_instance") for n in got)


def test_load_watch_counts_loads_and_their_time_from_state_events() -> None:
    clock = FakeClock()
    watch = LoadWatch(clock)

    def state(name: str, old: str, new: str) -> None:
        watch(Event(name, EventKind.STATE, old, new))

    state("alpha", "stopped", "starting")
    asyncio.run(clock.advance(2.5))
    watch(Event("alpha", EventKind.HEALTH, "unknown", "healthy"))  # not a state: ignored
    state("alpha", "starting", "running")
    state("beta", "stopped", "starting")
    state("beta", "starting", "backoff")  # a failed load
    state("beta", "backoff", "starting")
    state("beta", "starting", "stopping")  # stopped while loading: neither
    state("beta", "stopping", "stopped")
    got = {(s.name, s.labels.get("instance")): s.value for m in watch.collect() for s in m.samples}
    assert got[("llama_orch_loads_total", "alpha")] == 1, got
    assert ("llama_orch_loads_total", "beta") not in got
    assert got[("llama_orch_load_failures_total", "beta")] == 1
    assert got[("llama_orch_load_seconds_sum", "alpha")] == 2.5
    assert got[("llama_orch_load_seconds_count", "alpha")] == 1


def test_check_watch_counts_every_check_once() -> None:
    watch = CheckWatch()

    def counted() -> dict[tuple[str, str, str], float]:
        return {
            (s.name, s.labels["instance"], s.labels["kind"]): s.value
            for m in watch.collect()
            for s in m.samples
            if s.name.endswith(("_count", "_sum"))
        }

    assert counted() == {}
    for ms in (4.0, 6.0) + (1.0,) * 50:  # more than an instance's CheckLog keeps
        watch.observe("alpha", "health", ms / 1000)
    watch.observe("alpha", "completion", 0.02)
    got = counted()
    assert got[("llama_orch_health_check_seconds_count", "alpha", "health")] == 52
    assert abs(got[("llama_orch_health_check_seconds_sum", "alpha", "health")] - 0.060) < 1e-9
    assert got[("llama_orch_health_check_seconds_count", "alpha", "completion")] == 1
    assert counted() == got  # a scrape counts nothing again


def test_upstream_calls_are_counted_apart_not_as_a_model_named_nothing() -> None:
    """Polling /upstream/NAME/slots added "requests" of model "" (issue 19)."""
    from llama_orchestrator.gateway.records import RequestRecord

    metrics = GatewayMetrics(dict, dict)
    metrics.observe(RequestRecord(None, "alpha", "GET", "/upstream/alpha/slots", 200, 0.01, 0.02))
    metrics.observe(RequestRecord("alpha", "alpha", "POST", "/v1/completions", 200, 0.1, 0.2))
    metrics.observe(RequestRecord(None, None, "POST", "/v1/completions", 400, None, 0.001))
    got = samples(asyncio.run(metrics.exposition()).decode())
    upstream = got["llama_orch_upstream_requests_total"]
    assert upstream == [({"instance": "alpha", "code": "200"}, 1.0)]
    requests = {(s["model"], s["code"]): v for s, v in got["llama_orch_requests_total"]}
    assert requests == {("alpha", "200"): 1.0, ("", "400"): 1.0}  # a refused body is still one
