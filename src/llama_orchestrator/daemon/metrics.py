"""The supervisor's side of the gateway's ``GET /metrics`` (issue 12).

The gateway knows nothing of actors: the daemon installs two hooks on its
``GatewayMetrics``: the families below (instance up and state, restarts, memory
estimates, budgets, evictions), and which instances to scrape for their own llama.cpp
metrics (every running one, at the URL its server listens on).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from llama_orchestrator.daemon.preflight import memory_mb
from llama_orchestrator.daemon.supervisor import Supervisor
from llama_orchestrator.engine.states import Health, State
from llama_orchestrator.gateway.metrics import GatewayMetrics

MIB = 1024 * 1024


def supervisor_families(sup: Supervisor) -> Iterator[Metric]:
    up = GaugeMetricFamily(
        "llama_orch_instance_up",
        "1 when the instance is running and healthy, else 0.",
        labels=["instance"],
    )
    state = GaugeMetricFamily(
        "llama_orch_instance_state",
        "1 for the state the instance is in, 0 for the others.",
        labels=["instance", "state"],
    )
    restarts = CounterMetricFamily(
        "llama_orch_restarts",
        "Automatic restarts of the instance since its last up or restart.",
        labels=["instance"],
    )
    memory = GaugeMetricFamily(
        "llama_orch_instance_memory_estimate_bytes",
        "What the instance counts for against a device's budget (fit's estimate).",
        labels=["instance", "device"],
    )
    for name in sorted(sup.actors):
        actor = sup.actors[name]
        healthy = actor.state is State.RUNNING and actor.health is Health.HEALTHY
        up.add_metric([name], 1 if healthy else 0)
        for s in State:
            state.add_metric([name, s.value], 1 if actor.state is s else 0)
        restarts.add_metric([name], actor.restart_count)
        if actor.loaded is not None and actor.proc is not None:
            for device, mb in sorted(memory_mb(actor.loaded).items()):
                memory.add_metric([name, device], mb * MIB)
    yield from (up, state, restarts, memory)

    scheduler = sup.scheduler
    budget = GaugeMetricFamily(
        "llama_orch_memory_budget_bytes",
        "gateway.json memory_budget_mb per device (what instances may hold together).",
        labels=["device"],
    )
    for device, mb in sorted(scheduler.budget.memory_mb.items()):
        budget.add_metric([device], mb * MIB)
    yield budget
    if scheduler.budget.max_running is not None:
        yield GaugeMetricFamily(
            "llama_orch_max_running",
            "gateway.json max_running: instances that may run at once.",
            value=scheduler.budget.max_running,
        )
    yield CounterMetricFamily(
        "llama_orch_evictions",
        "Idle instances stopped to make room for another under the budgets.",
        value=scheduler.evictions,
    )


def scrape_targets(sup: Supervisor) -> dict[str, str]:
    """Running instances and the URL of their server."""
    return {
        name: actor.url
        for name, actor in sorted(sup.actors.items())
        if actor.state is State.RUNNING and actor.proc is not None and actor.url
    }


def install(metrics: GatewayMetrics, sup: Supervisor) -> None:
    metrics.extra = lambda: supervisor_families(sup)
    metrics.targets = lambda: scrape_targets(sup)
