"""The scheduler's view of the running instances (daemon/scheduler.py ``Seats``), read
from their actors on the daemon's loop: cheap attribute reads, nothing awaited.

An instance is *busy* while it loads, serves a request, or has requests waiting for it
in the gateway. While it is being drained to make room, only the requests that arrived
before its cutoff (chosen or ready, whichever is later, plus the scheduler's hold: one of
its load times) count as its work; later ones wait for it to be started again, so no
swap waits forever.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping

from llama_orchestrator.config.schema import InstanceGateway
from llama_orchestrator.daemon.actor import messages as m
from llama_orchestrator.daemon.actor.handlers import InstanceActor
from llama_orchestrator.daemon.budget import Seat
from llama_orchestrator.engine.states import State
from llama_orchestrator.models.fit import DEFAULT_RESERVE_MB

# (instance, cutoff) -> requests waiting in the gateway for it, enqueued before the cutoff
Demand = Callable[[str, float], int]


# An evicted server has nothing in flight and nothing to save: SIGTERM, then SIGKILL at
# once (llama-server takes about 0.1 s to wind down its HTTP loop, and a swap waits on it).
EVICT_GRACE_S = 0.0
# A holder in any other state is loading or about to spawn: busy, never a victim.
_SETTLED = frozenset({State.RUNNING, State.BACKOFF, State.STOPPING})


def _no_demand(_name: str, _before: float) -> int:
    return 0


def cutoff(actor: InstanceActor, draining: float | None, hold: float = 0.0) -> float:
    """Requests enqueued before this count as the instance's own work (inf: all)."""
    if draining is None or actor.state is State.STARTING:
        return math.inf
    return max(draining, actor.ready_mono) + hold


class ActorSeats:
    def __init__(self, actors: Mapping[str, InstanceActor]) -> None:
        self._actors = actors
        self.default_ttl = 0  # gateway.json: for instances started on demand without a ttl
        self.demand: Demand = _no_demand  # the gateway's queues, once it runs
        self._stops: set[asyncio.Task[m.Outcome]] = set()

    def _gateway(self, actor: InstanceActor) -> InstanceGateway:
        return actor.loaded.config.gateway if actor.loaded else InstanceGateway()

    def _busy(self, actor: InstanceActor, draining: float | None, hold: float = 0.0) -> bool:
        if actor.state not in _SETTLED or actor.leases.in_flight:
            return True  # loading, or admitted and about to spawn
        return self.demand(actor.name, cutoff(actor, draining, hold)) > 0

    def seat(
        self, name: str, memory_mb: dict[str, int], draining: float | None, hold: float = 0.0
    ) -> Seat:
        actor = self._actors.get(name)
        if actor is None:
            return Seat(name, memory_mb)
        gw = self._gateway(actor)
        busy = self._busy(actor, draining, hold)
        return Seat(name, memory_mb, gw.pinned, gw.priority, busy, actor.leases.last_used)

    def idle(self, name: str) -> tuple[float, int]:
        actor = self._actors.get(name)
        if actor is None or actor.state is not State.RUNNING or self._busy(actor, None):
            return 0.0, 0
        ttl = self._gateway(actor).ttl
        if ttl is None:
            ttl = self.default_ttl if actor.on_demand else 0
        return actor.leases.idle_for(), ttl

    def evict(self, name: str, reason: str) -> None:
        """Stop it as ``down`` would, with a short grace: nothing is in flight on it."""
        actor = self._actors.get(name)
        if actor is None:
            return
        task = asyncio.get_running_loop().create_task(
            actor.request(lambda r: m.Stop(r, reason=reason, grace=EVICT_GRACE_S))
        )
        self._stops.add(task)
        task.add_done_callback(self._stops.discard)

    def queued(self, name: str) -> int:
        return self.demand(name, math.inf)

    def load_s(self, name: str) -> float:
        """Its last start to ready, from its record (one read, when it is chosen)."""
        actor = self._actors.get(name)
        row = actor.ctx.store.get(name) if actor is not None else None
        if not row or not row.ready_time or not row.start_time:
            return 0.0
        return max(row.ready_time - row.start_time, 0.0)

    def free_mib(self, device: str) -> int | None:
        """Free memory now: host RAM for ``cpu``, a detected GPU's free memory minus the
        reserve ``fit`` keeps (None when it reports none)."""
        if device == "cpu":
            import psutil

            return int(psutil.virtual_memory().available) // 2**20
        from llama_orchestrator.gpu.detect import detect
        from llama_orchestrator.gpu.devices import find_device, parse_device_ref

        backend, index = parse_device_ref(device)
        found = find_device(detect(None).devices, backend, index)
        if found is None or found.free_mib is None:
            return None
        return max(found.free_mib - DEFAULT_RESERVE_MB, 0)
