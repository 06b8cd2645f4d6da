"""Which instance serves a request: names, leases, the wait queue and on-demand starts.

A name (an instance's own name or one of its aliases) maps to its members, the instances
that carry it; several members make a pool of replicas. A request takes a lease on the
routable member with the fewest leases in flight (ties rotate), only while that member has
a free slot (``in_flight < slots``; issue 9, admission). Otherwise it waits in the name's
FIFO, bounded in length (429) and in time (503). A name none of whose members is running
starts one member on demand (one ``ensure_started`` per instance at a time, whatever the
number of waiting requests), and a circuit breaker stops restarting an instance whose
starts keep failing.

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

from llama_orchestrator.gateway.backend import Directory, Endpoint, Instance, StartResult
from llama_orchestrator.gateway.clock import Clock, SystemClock
from llama_orchestrator.gateway.errors import GatewayError
from llama_orchestrator.gateway.settings import GatewaySettings

# Instance states in which the daemon is already bringing it up: wait, do not start.
COMING_UP = frozenset({"starting", "backoff", "running"})
# How often the name index is rebuilt from the directory (a miss rebuilds at once).
INDEX_TTL = 1.0


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


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

    def _wake(self) -> None:
        if self.wake is not None and not self.wake.done():
            self.wake.set_result(None)


@dataclass(eq=False)
class _Route:
    name: str
    queue: collections.deque[_Waiter] = field(default_factory=collections.deque)
    rr: int = 0


@dataclass(eq=False)
class _Breaker:
    failures: collections.deque[float] = field(default_factory=collections.deque)
    open_until: float = -math.inf
    tripped: bool = False
    last_error: str = ""


@dataclass(eq=False)
class _Start:
    began: float
    task: asyncio.Task[None]


class Router:
    def __init__(self, directory: Directory, settings: GatewaySettings, clock: Clock) -> None:
        self._directory = directory
        self._settings = settings
        self._clock = clock
        self._index: dict[str, tuple[Instance, ...]] = {}
        self._names_of: dict[str, tuple[str, ...]] = {}
        self._index_at = -math.inf
        self._routes: dict[str, _Route] = {}
        self._starts: dict[str, _Start] = {}
        self._breakers: dict[str, _Breaker] = {}
        self._seq = itertools.count()
        self.start_calls: collections.Counter[str] = collections.Counter()

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

    def starting(self) -> list[str]:
        return sorted(self._starts)

    # -- leases --------------------------------------------------------------------------

    def try_acquire(self, name: str, members: Sequence[Instance]) -> Lease | None:
        """A lease at once, or None (the caller then awaits ``acquire``). Never jumps a
        queue: with requests waiting for this name, it waits too."""
        route = self._routes.get(name)
        if route is not None and route.queue:
            return None
        return self._pick(name, members)

    def _pick(self, name: str, members: Sequence[Instance]) -> Lease | None:
        n = len(members)
        if n == 1:
            inst = members[0]
            if inst.routable and inst.in_flight < inst.slots:
                ep = inst.acquire()
                if ep is not None:
                    return Lease(inst, ep, self)
            return None
        route = self._route(name)
        start = route.rr % n if n else 0
        best: Instance | None = None
        best_n = 0
        for k in range(n):
            inst = members[(start + k) % n]
            if not inst.routable:
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
        return Lease(best, ep, self)

    def others(self, name: str, exclude: set[str] | frozenset[str]) -> list[Instance]:
        """The members of ``name`` not in ``exclude``."""
        return [m for m in self.members(name) or () if m.name not in exclude]

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
    ) -> Lease:
        """A lease on a member of ``name``, waiting (in order) as long as the settings
        allow; raises ``GatewayError`` (404, 429, 503) when there is none to be had.

        With ``grant``, a lease that frees up for this request is handed to ``grant`` in
        the same callback that released it (no event-loop turn between a slot freeing and
        the next request going out); the lease is then returned too, already owned."""
        members = self.members(name)
        if members is None:
            raise GatewayError(404, "model_not_found", f"model {name!r} not found")
        if exclude:
            members = tuple(m for m in members if m.name not in exclude)
        route = self._route(name)
        if not route.queue:
            lease = self._pick(name, members)
            if lease is not None:
                return lease
        loading, instance = self._assess(members)
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
            members = self._members_for(route.name, w)
            if w.loading:
                if any(m.routable for m in members):
                    # It came up but every slot is taken: now it waits for a slot.
                    w.loading = False
                    w.deadline = max(w.deadline, w.enqueued + self._settings.queue_timeout)
                else:
                    self._assess(members)  # raises when there is nothing left to wait for
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
            f"{len(route.queue)} requests waiting",
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

    def _members_for(self, name: str, w: _Waiter) -> tuple[Instance, ...]:
        members = self.members(name) or ()
        if w.exclude:
            members = tuple(m for m in members if m.name not in w.exclude)
        return members

    def _pump(self, route: _Route) -> None:
        queue = route.queue
        while queue:
            head = queue[0]
            if head.done:
                queue.popleft()
                continue
            lease = self._pick(route.name, self._members_for(route.name, head))
            if lease is None:
                return
            queue.popleft()
            head.give(lease)
            if head.grant is not None:
                head.grant(lease)  # may release at once, which pumps again: queue is current

    # -- starting ------------------------------------------------------------------------

    def _assess(
        self, members: Sequence[Instance], failed: dict[str, str] | None = None
    ) -> tuple[bool, str | None]:
        """Why there is no lease now: (False, None) when a member is up but busy (wait
        for a slot), (True, name) when a member is coming up (wait for it; one is started
        on demand when needed). Raises 503 when nothing can come up."""
        failed = failed or {}
        for inst in members:
            if inst.routable and inst.name not in failed:
                return False, None
        for inst in members:
            if inst.name in self._starts:
                return True, inst.name
        for inst in members:
            if inst.name not in failed and inst.state in COMING_UP:
                return True, inst.name
        reasons: list[str] = []
        retry_after: float | None = None
        now = self._clock.monotonic()
        for inst in members:
            if inst.name in failed:
                reasons.append(f"instance {inst.name!r} could not start: {failed[inst.name]}")
                continue
            if not inst.on_demand:
                if inst.state == "fatal":
                    reasons.append(
                        f"instance {inst.name!r} is fatal: {inst.last_error or 'no error recorded'}"
                    )
                else:
                    reasons.append(
                        f"instance {inst.name!r} is {inst.state} and on_demand is off "
                        f"(start it with `llama-orch up {inst.name}`)"
                    )
                continue
            b = self._breakers.get(inst.name)
            if b is not None and now < b.open_until:
                wait = b.open_until - now
                retry_after = wait if retry_after is None else min(retry_after, wait)
                s = self._settings
                reasons.append(
                    f"instance {inst.name!r} failed to start {s.breaker_failures} times within "
                    f"{s.breaker_window:g} s; not trying again for {math.ceil(wait)} s "
                    f"(last error: {b.last_error or inst.last_error or 'unknown'})"
                )
                continue
            self._start(inst)
            return True, inst.name
        code = "circuit_open" if retry_after is not None else "instance_unavailable"
        raise GatewayError(503, code, "; ".join(reasons) or "no instance", retry_after=retry_after)

    def _start(self, inst: Instance) -> None:
        if inst.name in self._starts:
            return
        task = asyncio.get_running_loop().create_task(self._run_start(inst))
        self._starts[inst.name] = _Start(self._clock.monotonic(), task)

    async def _run_start(self, inst: Instance) -> None:
        self.start_calls[inst.name] += 1
        try:
            result = await inst.ensure_started()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            result = StartResult(False, f"{type(e).__name__}: {e}")
        finally:
            self._starts.pop(inst.name, None)
        self._start_done(inst, result)

    def _start_done(self, inst: Instance, result: StartResult) -> None:
        now = self._clock.monotonic()
        b = self._breakers.setdefault(inst.name, _Breaker())
        if result.ok:
            self._breakers.pop(inst.name, None)
        else:
            s = self._settings
            b.last_error = result.message
            b.failures.append(now)
            while b.failures and b.failures[0] < now - s.breaker_window:
                b.failures.popleft()
            # Tripped once: after the cool-down one attempt is allowed, and its failure
            # opens the breaker again at once.
            if len(b.failures) >= s.breaker_failures or (b.tripped and now >= b.open_until):
                b.open_until = now + s.breaker_cooldown
                b.tripped = True
                b.failures.clear()
        for name in self._names_of.get(inst.name, ()):
            route = self._routes.get(name)
            if route is None or not route.queue:
                continue
            if result.ok:
                self._pump(route)
                continue
            try:
                self._assess(self.members(name) or (), failed={inst.name: result.message})
            except GatewayError as e:
                for w in route.queue:
                    if not w.done:
                        w.fail(e)

    async def close(self) -> None:
        starts = [s.task for s in self._starts.values()]
        for task in starts:
            task.cancel()
        for route in self._routes.values():
            for w in route.queue:
                if not w.done:
                    w.fail(GatewayError(503, "gateway_closing", "the gateway is shutting down"))
        if starts:
            await asyncio.gather(*starts, return_exceptions=True)
