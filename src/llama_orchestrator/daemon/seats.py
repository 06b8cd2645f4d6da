"""The scheduler's view of the running instances (daemon/scheduler.py ``Seats``), read
from their actors' snapshots and leases on the daemon's loop: attribute reads, nothing
awaited.

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
from typing import Protocol

from llama_orchestrator.config.schema import InstanceGateway
from llama_orchestrator.daemon.actor import messages as m
from llama_orchestrator.daemon.actor.handlers import InstanceActor
from llama_orchestrator.daemon.actor.snapshot import InstanceSnapshot
from llama_orchestrator.daemon.budget import Seat
from llama_orchestrator.engine.states import State
from llama_orchestrator.gpu.overhead import counted_bytes
from llama_orchestrator.models.fit import DEFAULT_RESERVE_MB

# (instance, cutoff) -> requests waiting in the gateway for it, enqueued before the cutoff
Demand = Callable[[str, float], int]


# An evicted server has nothing in flight and nothing to save: SIGTERM, then SIGKILL at
# once (llama-server takes about 0.1 s to wind down its HTTP loop, and a swap waits on it).
EVICT_GRACE_S = 0.0
# A holder in any other state is loading or about to spawn: busy, never a victim.
_SETTLED = frozenset({State.RUNNING, State.BACKOFF, State.STOPPING})


class Queues(Protocol):
    def demand(self, instance: str, before: float = math.inf) -> int: ...


class GatewayQueues:
    """The requests waiting in the gateway, as the seats count them: the queues of the
    gateway that listens, once one does (it may start listening only on a reload of
    gateway.json). The gateway host, given this at its construction, says which
    (daemon/gateway_host.py); until then nothing waits."""

    def __init__(self) -> None:
        self._queues: Queues | None = None

    def follow(self, queues: Queues) -> None:
        self._queues = queues

    def demand(self, instance: str, before: float = math.inf) -> int:
        queues = self._queues
        return queues.demand(instance, before) if queues is not None else 0


def cutoff(snap: InstanceSnapshot, draining: float | None, hold: float = 0.0) -> float:
    """Requests enqueued before this count as the instance's own work (inf: all)."""
    if draining is None or snap.state is State.STARTING:
        return math.inf
    return max(draining, snap.ready_mono) + hold


class ActorSeats:
    def __init__(self, actors: Mapping[str, InstanceActor], demand: Demand) -> None:
        self._actors = actors  # the supervisor's table: it adds and removes, this reads
        self._demand = demand  # the gateway's queues (GatewayQueues.demand)
        self._default_ttl = 0  # gateway.json: for instances started on demand without a ttl
        self._stops: set[asyncio.Task[m.Outcome]] = set()
        # An Ollama client's keep_alive: the idle ttl until the instance stops (issue 20),
        # with the time that run became ready (a later run has its config's ttl again).
        self._keep_alive: dict[str, tuple[int, float]] = {}

    def configure(self, default_ttl: int) -> None:
        """gateway.json (re)loaded: the ttl of instances started on demand without one."""
        self._default_ttl = default_ttl

    def _gateway(self, snap: InstanceSnapshot) -> InstanceGateway:
        return snap.loaded.config.gateway if snap.loaded else InstanceGateway()

    def _busy(self, actor: InstanceActor, draining: float | None, hold: float = 0.0) -> bool:
        snap = actor.snapshot
        if snap.state not in _SETTLED or actor.leases.in_flight:
            return True  # loading, or admitted and about to spawn
        return self._demand(actor.name, cutoff(snap, draining, hold)) > 0

    def seat(
        self, name: str, memory_mb: dict[str, int], draining: float | None, hold: float = 0.0
    ) -> Seat:
        actor = self._actors.get(name)
        if actor is None:
            return Seat(name, memory_mb)
        snap = actor.snapshot
        gw = self._gateway(snap)
        busy = self._busy(actor, draining, hold)
        counted = measured_count(snap, memory_mb)
        return Seat(name, counted, gw.pinned, gw.priority, busy, actor.leases.last_used)

    def keep_alive(self, name: str, ttl: int) -> None:
        """The idle ttl of ``name`` from now until it stops (0: never stopped for being
        idle), as the last request's ``keep_alive`` asked (issue 20, the Ollama API)."""
        actor = self._actors.get(name)
        if actor is not None:
            self._keep_alive[name] = (ttl, actor.snapshot.ready_mono)

    def idle(self, name: str) -> tuple[float, int]:
        actor = self._actors.get(name)
        if actor is None or actor.snapshot.state is not State.RUNNING or self._busy(actor, None):
            return 0.0, 0
        snap = actor.snapshot
        ttl = self._gateway(snap).ttl
        kept = self._keep_alive.get(name)
        if kept is not None and kept[1] == snap.ready_mono:
            ttl = kept[0]
        if ttl is None:
            ttl = self._default_ttl if snap.on_demand else 0
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
        return self._demand(name, math.inf)

    def load_s(self, name: str) -> float:
        """Its last start to ready (its snapshot keeps the record's times)."""
        actor = self._actors.get(name)
        return actor.snapshot.load_s if actor is not None else 0.0

    def free_mib(self, device: str) -> int | None:
        return free_mib(device)


def measured_count(snap: InstanceSnapshot, guess: Mapping[str, int]) -> dict[str, int]:
    """What a holder counts for per device (issue 18): ``guess`` (its estimate plus the
    device's per-process overhead) until it is measured there, then its measured peak
    (``gpu/overhead.py:counted_bytes``; while loading, never less than the guess).
    A device measured beyond the claim (a split model) counts too."""
    loading = snap.state is not State.RUNNING
    counted = dict(guess)
    for device, seen in snap.memory.items():
        if seen.peak_mb is not None and (device in guess or seen.peak_mb > 0):
            est = guess.get(device, 0)
            counted[device] = counted_bytes(est, seen.peak_mb, 0, loading=loading)
    return counted


def free_mib(device: str) -> int | None:
    """Free memory now: host RAM for ``cpu``, a detected GPU's free memory minus the
    reserve ``fit`` keeps (None when it reports none). It may block: call it in a thread."""
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
