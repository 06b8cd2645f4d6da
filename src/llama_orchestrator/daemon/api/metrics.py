"""The supervisor's side of the gateway's ``GET /metrics`` (issue 12).

The gateway knows nothing of actors: the daemon installs two hooks on its
``GatewayMetrics``: the families below (instance up and state, restarts, loads and their
duration, health check latency, memory estimates, budgets, evictions), and which
instances to scrape for their own llama.cpp metrics (every running one, at the URL its
server listens on).

The memory figures are the scheduler's own: what each admitted instance counts for
against the budgets (its holders), so the exposition shows what decisions are made on.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from llama_orchestrator.daemon.api.metrics_kv import kv_families
from llama_orchestrator.daemon.api.metrics_memory import memory_families
from llama_orchestrator.daemon.api.metrics_watch import Watches
from llama_orchestrator.daemon.supervisor import Supervisor
from llama_orchestrator.engine.states import State
from llama_orchestrator.gateway.metrics import GatewayMetrics

MIB = 1024 * 1024


def supervisor_families(sup: Supervisor, watches: Watches) -> Iterator[Metric]:
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
        snap = sup.actors[name].snapshot
        up.add_metric([name], 1 if snap.routable else 0)  # running and healthy
        for s in State:
            state.add_metric([name, s.value], 1 if snap.state is s else 0)
        restarts.add_metric([name], snap.restart_count)
    scheduler = sup.scheduler
    for name, claim in sorted(scheduler.holders.items()):
        for device, mb in sorted(claim.memory_mb.items()):
            memory.add_metric([name, device], mb * MIB)
    lost = CounterMetricFamily(
        "llama_orch_requests_lost",
        "Requests in flight when a daemon of this home died (killed, crashed), which never "
        "got an answer; counted by the daemon started after it.",
    )
    lost.add_metric([], watches.lost_requests)
    yield from (up, state, restarts, memory, lost)
    yield from watches.loads.collect()
    yield from watches.checks.collect()

    budget = GaugeMetricFamily(
        "llama_orch_memory_budget_bytes",
        "Memory instances may hold together per device: gateway.json memory_budget_mb, or "
        "the default the scheduler took from the device's free memory.",
        labels=["device"],
    )
    for device, mb in sorted(scheduler.effective_budget().memory_mb.items()):
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
    yield from memory_families(sup)
    if sup.ctx.kv is not None:
        yield from kv_families(sup.ctx.kv)


def scrape_targets(sup: Supervisor) -> dict[str, tuple[str, str | None]]:
    """Running instances: the URL of their server, and the key a remote one wants."""
    found = {}
    for name, actor in sorted(sup.actors.items()):
        snap = actor.snapshot
        if snap.state is State.RUNNING and snap.attached and snap.url:
            found[name] = (snap.url, actor.leases.api_key)
    return found


def install(metrics: GatewayMetrics, sup: Supervisor, watches: Watches) -> None:
    """Put the supervisor's families and scrape targets on a gateway's metrics (the
    gateway, and so this, may start more than once in a daemon's life; ``watches`` are
    the daemon's, made once by its composition root, daemon/server.py)."""
    metrics.extra = lambda: supervisor_families(sup, watches)
    metrics.targets = lambda: scrape_targets(sup)
