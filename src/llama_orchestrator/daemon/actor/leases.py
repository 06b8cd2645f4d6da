"""What an instance keeps for its readers: leases of its server, and its last checks."""

from __future__ import annotations

from collections import deque
from typing import Any

from llama_orchestrator.clock import Clock
from llama_orchestrator.engine.health import Probe
from llama_orchestrator.gateway.backend import Endpoint

CHECK_HISTORY = 20  # health checks kept per instance for `llama-orch health`


class Leases:
    """Requests in flight on one server, and when the last one ended (monotonic).

    The one mutable object of an actor that others share (everything else of it is read
    from its frozen ``snapshot``, daemon/actor/snapshot.py): the gateway's ``acquire`` and
    ``release`` change it, on the daemon's loop, for every request it routes, without a
    message to the actor (a lease is taken and given back far more often than anything
    changes state). Everyone else only reads it: idle TTL, least-busy routing,
    drain-before-evict and metrics. The actor itself only sets ``api_key`` (KeyedLeases)
    when a run begins. All of them run on the one loop, so no lock is needed.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.in_flight = 0
        self.last_used = clock.monotonic()
        self.total = 0

    def acquire(self, instance: str, url: str | None) -> Endpoint | None:
        if url is None:
            return None
        self.in_flight += 1
        self.total += 1
        return Endpoint(instance, url)

    def release(self) -> None:
        self.in_flight = max(0, self.in_flight - 1)
        self.last_used = self.clock.monotonic()

    def idle_for(self) -> float:
        """Seconds since the last request ended; 0 while any is in flight."""
        return 0.0 if self.in_flight else self.clock.monotonic() - self.last_used


class CheckLog:
    """The last ``CHECK_HISTORY`` health checks (bounded)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._checks: deque[dict[str, Any]] = deque(maxlen=CHECK_HISTORY)

    def record(self, kind: str, probe: Probe) -> None:
        self._checks.append(
            {
                "ts": self.clock.time(),
                "kind": kind,
                "ok": probe.ok,
                "health": probe.health.value,
                "status_code": probe.status_code,
                "latency_ms": round(probe.latency_ms, 2),
                "detail": probe.detail,
            }
        )

    def recent(self) -> tuple[dict[str, Any], ...]:
        """The checks kept, oldest first (for the actor's snapshot)."""
        return tuple(self._checks)

    def __iter__(self) -> Any:
        return iter(self._checks)

    def __len__(self) -> int:
        return len(self._checks)
