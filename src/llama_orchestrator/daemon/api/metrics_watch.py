"""Figures the supervisor's metrics take from what happens, not from a look at the
actors at scrape time (issue 12): loads and their duration, health check latency.

* :class:`LoadWatch` is a sink on the event bus: ``starting`` -> ``running`` is a load
  (``llama_orch_loads_total``), timed on the monotonic clock from the ``starting``
  event (``llama_orch_load_seconds``); ``starting`` -> ``backoff``/``fatal``/``exited``
  a failed one (``llama_orch_load_failures_total``). A stop asked for during a load is
  neither. Being a sink it runs inline and sees every event, never dropped.
* :class:`CheckWatch` observes each health check as the actor records it
  (``ActorContext.on_check``) into ``llama_orch_health_check_seconds``. Checks are not
  events (only health *changes* are): one a second per instance would flood the records.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import Counter, Histogram
from prometheus_client.core import Metric

from llama_orchestrator.clock import SYSTEM_CLOCK, Clock
from llama_orchestrator.daemon.events import Event, EventKind
from llama_orchestrator.engine.states import State

LOAD_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
CHECK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
FAILED = frozenset({State.BACKOFF.value, State.FATAL.value, State.EXITED.value})


class LoadWatch:
    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self._since: dict[str, float] = {}  # instance -> monotonic time it began starting
        self.loads = Counter(
            "llama_orch_loads_total",
            "Starts that became ready (starting -> running), per instance.",
            ["instance"],
            registry=None,
        )
        self.failures = Counter(
            "llama_orch_load_failures_total",
            "Starts that ended before the server was ready (it exited or failed).",
            ["instance"],
            registry=None,
        )
        self.seconds = Histogram(
            "llama_orch_load_seconds",
            "Time from an instance's start to its first /health 200.",
            ["instance"],
            buckets=LOAD_BUCKETS,
            registry=None,
        )

    def __call__(self, event: Event) -> None:
        if event.kind is not EventKind.STATE:
            return
        name = event.instance
        if event.new == State.STARTING.value:
            self._since[name] = self.clock.monotonic()
            return
        if event.old != State.STARTING.value:
            return
        began = self._since.pop(name, None)
        if event.new == State.RUNNING.value:
            self.loads.labels(name).inc()
            if began is not None:
                self.seconds.labels(name).observe(max(0.0, self.clock.monotonic() - began))
        elif event.new in FAILED:
            self.failures.labels(name).inc()

    def collect(self) -> Iterator[Metric]:
        yield from self.loads.collect()
        yield from self.failures.collect()
        yield from self.seconds.collect()


class CheckWatch:
    def __init__(self) -> None:
        self.seconds = Histogram(
            "llama_orch_health_check_seconds",
            "Latency of the health checks (kind: health for /health, completion for the "
            "one-token completion probe).",
            ["instance", "kind"],
            buckets=CHECK_BUCKETS,
            registry=None,
        )

    def observe(self, instance: str, kind: str, seconds: float) -> None:
        self.seconds.labels(instance, kind).observe(max(0.0, seconds))

    def collect(self) -> Iterator[Metric]:
        yield from self.seconds.collect()


@dataclass
class Watches:
    """What is counted as it happens, once per daemon: ``loads`` is a sink on its bus and
    ``checks.observe`` its actors' ``on_check`` (both wired by daemon/server.py)."""

    loads: LoadWatch
    checks: CheckWatch = field(default_factory=CheckWatch)
    # requests in flight when a daemon of this home died, counted by the next one
    lost_requests: int = 0
