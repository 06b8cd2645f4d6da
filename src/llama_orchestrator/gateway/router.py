"""Which instance serves a request: names, leases and the wait queue.

A name (an instance's own name or one of its aliases) maps to its members, the instances
that carry it; several members make a pool of replicas. A request takes a lease on the
routable member with the fewest leases in flight (ties rotate), only while that member has
a free slot (``in_flight < slots``; issue 9, admission). Otherwise it waits in the name's
FIFO, bounded in length (429) and in time (503). A name none of whose members is running
starts one member on demand, behind a circuit breaker (``starts.Starter``).

Affinity (affinity.py): a keyed request to a pool first tries its key's favourite, the
member the key was last sent to, when that member is routable and has a free slot (a
hit); else it goes least busy (a miss, or a fallback when the favourite was skipped) and
the key moves to the member chosen. A saturated favourite is never waited for.

Counts are the instances' own lease counts (``in_flight``), never scraped metrics.
Everything here runs on the event loop's thread; nothing blocks.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from llama_orchestrator.clock import Clock, SystemClock
from llama_orchestrator.gateway.affinity import Key, Pins, favourite
from llama_orchestrator.gateway.backend import Directory, Endpoint, Instance, StartResult
from llama_orchestrator.gateway.errors import GatewayError
from llama_orchestrator.gateway.settings import GatewaySettings
from llama_orchestrator.gateway.starts import Starter

# How often the name index is rebuilt from the directory (a miss rebuilds at once).
INDEX_TTL = 1.0


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _without(
    members: tuple[Instance, ...], exclude: frozenset[str] | set[str]
) -> tuple[Instance, ...]:
    return tuple(m for m in members if m.name not in exclude) if exclude else members


class Lease:
    """One request's hold on one instance; ``release`` is idempotent."""

    __slots__ = ("_done", "_router", "endpoint", "instance")

    def __init__(self, instance: Instance, endpoint: Endpoint, router: Router) -> None:
        self.instance = instance
        self.endpoint = endpoint
        self._router = router
        self._done = False

    def release(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            self.instance.release()
        finally:
            self._router.released(self.instance)


class WaitListener(Protocol):
    """Told when a request starts waiting, and every ``loading_interval`` while it waits."""

    def waiting(self, instance: str | None, starting: bool) -> None: ...

    def tick(self) -> None: ...


Grant = Callable[[Lease], None]


@dataclass(eq=False)
class _Waiter:
    seq: int
    enqueued: float
    loading: bool  # waiting for an instance to come up (load_timeout), not for a slot
    deadline: float
    grant: Grant | None = None  # takes the lease over in the releasing callback itself
    exclude: frozenset[str] = frozenset()  # members it must not go to (unreachable)
    key: Key | None = None  # its affinity key
    lease: Lease | None = None
    error: GatewayError | None = None
    gone: bool = False  # its request was cancelled
    wake: asyncio.Future[None] | None = None

    @property
    def done(self) -> bool:
        return self.lease is not None or self.error is not None or self.gone

    def give(self, lease: Lease) -> None:
        self.lease = lease
        self._wake()

    def fail(self, error: GatewayError) -> None:
        self.error = error
        self._wake()

    def poke(self) -> None:
        self._wake()

    def _wake(self) -> None:
        if self.wake is not None:
            _resolve(self.wake)


@dataclass(eq=False)
class _Route:
    name: str
    queue: collections.deque[_Waiter] = field(default_factory=collections.deque)
    rr: int = 0
    pins: Pins = field(default_factory=Pins)  # affinity: key -> member


class Router:
    def __init__(self, directory: Directory, settings: GatewaySettings, clock: Clock) -> None:
        self._directory = directory
        self._settings = settings
        self._clock = clock
        self._index: dict[str, tuple[Instance, ...]] = {}
        self._names_of: dict[str, tuple[str, ...]] = {}
        self._index_at = -math.inf
        self._routes: dict[str, _Route] = {}
        self._seq = itertools.count()
        self._starter = Starter(settings, clock, self._started)
        self.start_calls = self._starter.calls  # ensure_started calls, per instance
        # Keyed picks on pools, by (name, "hit" | "miss" | "fallback").
        self.affinity: collections.Counter[tuple[str, str]] = collections.Counter()

    def reconfigure(self, settings: GatewaySettings) -> None:
        self._settings = settings
        self._starter.reconfigure(settings)

    # -- names ---------------------------------------------------------------------------

    def refresh(self) -> dict[str, tuple[Instance, ...]]:
        index: dict[str, list[Instance]] = {}
        for inst in self._directory.instances():
            for name in (inst.name, *inst.aliases):
                found = index.setdefault(name, [])
                if inst not in found:
                    found.append(inst)
        self._index = {name: tuple(found) for name, found in index.items()}
        names_of: dict[str, list[str]] = {}
        for name, members in self._index.items():
            for inst in members:
                names_of.setdefault(inst.name, []).append(name)
        self._names_of = {k: tuple(v) for k, v in names_of.items()}
        self._index_at = self._clock.monotonic()
        return self._index

    def members(self, name: str) -> tuple[Instance, ...] | None:
        if self._clock.monotonic() - self._index_at > INDEX_TTL:
            self.refresh()
        found = self._index.get(name)
        if found is None:
            found = self.refresh().get(name)
        return found

    def names(self) -> list[str]:
        return sorted(self._index)

    def queue_depths(self) -> dict[str, int]:
        return {name: len(r.queue) for name, r in self._routes.items() if r.queue}

    def demand(self, instance: str, before: float = math.inf) -> int:
        """Requests waiting for a name ``instance`` carries, enqueued by ``before``."""
        count = 0
        for name in self._names_of.get(instance, ()):
            route = self._routes.get(name)
            if route is not None:
                count += sum(1 for w in route.queue if not w.done and w.enqueued <= before)
        return count

    def poke(self, instance: str) -> None:
        """``instance`` changed state: its waiters look again at once (a start to make,
        a slot that opened) instead of at their next recheck."""
        for name in self._names_of.get(instance, ()):
            route = self._routes.get(name)
            if route is not None:
                for w in route.queue:
                    w.poke()

    def starting(self) -> list[str]:
        return self._starter.starting()

    # -- leases --------------------------------------------------------------------------

    def try_acquire(
        self, name: str, members: Sequence[Instance], key: Key | None = None
    ) -> Lease | None:
        """A lease at once, or None (the caller then awaits ``acquire``). Never jumps a
        queue: with requests waiting for this name, it waits too."""
        route = self._routes.get(name)
        if route is not None and route.queue:
            return None
        return self._pick(name, members, key=key)

    def _pick(
        self,
        name: str,
        members: Sequence[Instance],
        enqueued: float = math.inf,
        key: Key | None = None,
    ) -> Lease | None:
        """The key's favourite when it has a free slot, else the least busy routable
        member with a free slot. A member being drained to make room (``cutoff``) takes
        only requests that waited for it since before then."""
        n = len(members)
        if n == 1:
            inst = members[0]
            if inst.routable and inst.in_flight < inst.slots and enqueued <= inst.cutoff:
                ep = inst.acquire()
                if ep is not None:
                    return Lease(inst, ep, self)
            return None
        route = self._route(name)
        pins, result = None, "miss"
        if key is not None and self._settings.affinity:
            pins = route.pins
            fav, result = favourite(pins, key, members, enqueued)
            if fav is not None and (ep := fav.acquire()) is not None:
                self.affinity[name, result] += 1
                return Lease(fav, ep, self)
            result = "fallback" if fav is not None else result
        start = route.rr % n if n else 0
        best: Instance | None = None
        best_n = 0
        for k in range(n):
            inst = members[(start + k) % n]
            if not inst.routable or enqueued > inst.cutoff:
                continue
            busy = inst.in_flight
            if busy >= inst.slots:
                continue
            if best is None or busy < best_n:
                best, best_n = inst, busy
        if best is None:
            return None
        ep = best.acquire()
        if ep is None:
            return None
        route.rr = start + 1  # the next tie starts one further along
        if pins is not None and key is not None:
            pins.pin(key, best.name)
            self.affinity[name, result] += 1
        return Lease(best, ep, self)

    def others(self, name: str, exclude: set[str] | frozenset[str]) -> tuple[Instance, ...]:
        """The members of ``name`` not in ``exclude``."""
        return _without(self.members(name) or (), exclude)

    def _route(self, name: str) -> _Route:
        route = self._routes.get(name)
        if route is None:
            route = self._routes[name] = _Route(name)
        return route

    async def acquire(
        self,
        name: str,
        listener: WaitListener | None = None,
        grant: Grant | None = None,
        exclude: frozenset[str] = frozenset(),
        key: Key | None = None,
    ) -> Lease:
        """A lease on a member of ``name``, waiting (in order) as long as the settings
        allow; raises ``GatewayError`` (404, 429, 503) when there is none to be had.

        With ``grant``, a lease that frees up for this request is handed to ``grant`` in
        the same callback that released it (no event-loop turn between a slot freeing and
        the next request going out); the lease is then returned too, already owned."""
        members = self.members(name)
        if members is None:
            raise GatewayError(404, "model_not_found", f"model {name!r} not found")
        members = _without(members, exclude)
        route = self._route(name)
        if not route.queue:
            lease = self._pick(name, members, key=key)
            if lease is not None:
                return lease
        loading, instance = self._starter.assess(members)
        limit = self._settings.queue_max_per_model
        if len(route.queue) >= limit:
            raise GatewayError(
                429,
                "queue_full",
                f"{len(route.queue)} requests are already waiting for {name!r} "
                f"(queue.max_per_model is {limit}); retry later",
                type_="rate_limit_error",
                retry_after=1,
            )
        now = self._clock.monotonic()
        waiter = _Waiter(
            next(self._seq),
            now,
            loading,
            now + (self._settings.load_timeout if loading else self._settings.queue_timeout),
            grant,
            exclude,
            key,
        )
        route.queue.append(waiter)
        try:
            return await self._wait(route, waiter, instance, listener)
        except BaseException:
            if waiter.lease is not None and grant is None:
                waiter.lease.release()  # granted just as it gave up: hand it back
            waiter.gone = True
            raise
        finally:
            with contextlib.suppress(ValueError):
                route.queue.remove(waiter)

    async def _wait(
        self, route: _Route, w: _Waiter, instance: str | None, listener: WaitListener | None
    ) -> Lease:
        loop = asyncio.get_running_loop()
        interval = self._settings.loading_interval
        next_tick = w.enqueued + interval
        if listener is not None:
            listener.waiting(instance, w.loading)
        while True:
            if w.lease is not None:
                return w.lease
            if w.error is not None:
                raise w.error
            now = self._clock.monotonic()
            members = self.others(route.name, w.exclude)
            if w.loading:
                if any(m.routable for m in members):
                    # It came up but every slot is taken: now it waits for a slot.
                    w.loading = False
                    w.deadline = max(w.deadline, w.enqueued + self._settings.queue_timeout)
                else:
                    self._starter.assess(members)  # raises when there is nothing left to wait for
            elif not any(m.routable for m in members):
                # What it waited on went away (stopped to make room, idle, by hand, died):
                # one is started again, and the wait becomes a wait for it to load.
                w.loading, _ = self._starter.assess(members)
                if w.loading:
                    w.deadline = max(w.deadline, now + self._settings.load_timeout)
            if now >= w.deadline:
                raise self._timed_out(route, w, members)
            if listener is not None and now >= next_tick:
                listener.tick()
                next_tick = now + interval
            wake = min(w.deadline, next_tick if listener is not None else math.inf)
            step = min(wake - now, self._settings.recheck_interval)
            w.wake = loop.create_future()
            timer = self._later(step, w.wake)
            try:
                await w.wake
            finally:
                timer.cancel()
                w.wake = None
            if not w.done:
                self._pump(route)

    def _later(
        self, delay: float, fut: asyncio.Future[None]
    ) -> asyncio.Handle | asyncio.Task[None]:
        """Resolve ``fut`` after ``delay`` on the gateway's clock (a loop timer for the
        system clock; a sleeping task for an injected one)."""
        loop = asyncio.get_running_loop()
        if isinstance(self._clock, SystemClock):
            return loop.call_later(delay, _resolve, fut)

        async def sleep() -> None:
            await self._clock.sleep(delay)
            _resolve(fut)

        return loop.create_task(sleep())

    def _timed_out(self, route: _Route, w: _Waiter, members: Sequence[Instance]) -> GatewayError:
        s = self._settings
        if w.loading:
            states = ", ".join(f"{m.name}: {m.state}" for m in members)
            return GatewayError(
                503,
                "load_timeout",
                f"{route.name!r} did not become ready within {s.load_timeout:g} s "
                f"(load_timeout); {states}",
                retry_after=5,
            )
        return GatewayError(
            503,
            "queue_timeout",
            f"no free slot on {route.name!r} within {s.queue_timeout:g} s (queue.timeout); "
            f"{len(route.queue)} request{'' if len(route.queue) == 1 else 's'} waiting",
            retry_after=5,
        )

    def released(self, inst: Instance) -> None:
        """A lease ended: hand the free slot to the oldest request waiting for it."""
        names = self._names_of.get(inst.name, ())
        if len(names) == 1:
            route = self._routes.get(names[0])
            if route is not None and route.queue:
                self._pump(route)
            return
        waiting = [r for n in names if (r := self._routes.get(n)) is not None and r.queue]
        waiting.sort(key=lambda r: r.queue[0].seq)
        for route in waiting:
            self._pump(route)

    def _pump(self, route: _Route) -> None:
        queue = route.queue
        while queue:
            head = queue[0]
            if head.done:
                queue.popleft()
                continue
            members = self.others(route.name, head.exclude)
            lease = self._pick(route.name, members, head.enqueued, head.key)
            if lease is None:
                return
            queue.popleft()
            head.give(lease)
            if head.grant is not None:
                head.grant(lease)  # may release at once, which pumps again: queue is current

    # -- starts --------------------------------------------------------------------------

    def _started(self, inst: Instance, result: StartResult) -> None:
        """An on-demand start ended: its waiters take the new slots, or fail with it when
        nothing else can come up."""
        for name in self._names_of.get(inst.name, ()):
            route = self._routes.get(name)
            if route is None or not route.queue:
                continue
            if result.ok:
                self._pump(route)
                continue
            try:
                self._starter.assess(self.members(name) or (), failed={inst.name: result.message})
            except GatewayError as e:
                for w in route.queue:
                    if not w.done:
                        w.fail(e)

    async def close(self) -> None:
        starts = self._starter.cancel()
        for route in self._routes.values():
            for w in route.queue:
                if not w.done:
                    w.fail(GatewayError(503, "gateway_closing", "the gateway is shutting down"))
        if starts:
            await asyncio.gather(*starts, return_exceptions=True)
