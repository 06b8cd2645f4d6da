"""The scheduler: the one daemon-wide place that decides which instance may start.

Instance actors ask it for admission before they spawn a server, and tell it when a
server no longer holds resources (stopped, failed for good). It answers asynchronously,
through the callback the actor gave, so an actor never blocks on a decision and keeps
answering its own inbox (a ``down`` while a start waits for admission is handled at
once).

All decisions are taken in order on the scheduler's own task, from its own table of
holders, so two cold starts can never both claim one victim, both fit in the same free
memory, or both take one port. A start beyond the budgets (``max_running``,
``memory_budget_mb``; daemon/budget.py) waits while its victims are stopped: idle ones
at once, busy ones once they have drained (no request in flight, none waiting for them,
not loading), bounded by the claim's ``wait_s``. The same loop stops instances idle for
longer than their ``ttl``.

Swaps are ordered to load as few models as possible (issue 11):

* a busy victim keeps taking new requests, from when it was chosen or became ready
  (whichever is later), for as long as one of its own loads took (the cost of the swap it
  postpones, at most a quarter of ``wait_s``); requests that arrive after that wait for
  its next turn;
* of the starts that wait, the one with the most requests waiting for it goes first,
  then the oldest; a start that has waited a quarter of its ``wait_s`` goes before any
  that has not, so none waits forever.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial

from llama_orchestrator.clock import SYSTEM_CLOCK, Clock
from llama_orchestrator.daemon import placement
from llama_orchestrator.daemon.budget import (
    Budget,
    Evict,
    Fits,
    Never,
    NoSeats,
    Seat,
    Seats,
    Wait,
    choose,
)
from llama_orchestrator.daemon.offload import Offload, in_thread
from llama_orchestrator.daemon.placement import Detected, Placement
from llama_orchestrator.daemon.release import await_room
from llama_orchestrator.doctor.portcheck import endpoint_taken
from llama_orchestrator.gpu.overhead import overhead_key

DRAIN_POLL_S = 0.02  # how often victims are looked at while a start waits for them
TTL_POLL_S = 1.0  # how often idle instances are looked at


@dataclass(frozen=True)
class Claim:
    """What a start would hold while it runs."""

    instance: str
    endpoint: tuple[str, int] | None = None  # host, port its server listens on
    memory_mb: dict[str, int] = field(default_factory=dict)  # device key -> MiB
    force: bool = False  # past the budgets, knowingly (`up --force`)
    wait_s: float | None = None  # how long it may wait for room (None: load_timeout)
    binary: tuple[str, ...] = ()  # its llama-server's argv prefix: how it numbers devices


@dataclass(frozen=True)
class Admission:
    ticket: int
    granted: bool
    reason: str = ""
    victims: tuple[str, ...] = ()  # instances stopped to make room for it
    code: str = ""  # why refused: "port", "budget", "drain_timeout" or "device"
    device: str = ""  # where an ``auto`` instance was placed (daemon/placement.py)
    placed: str = ""  # why there, in a sentence


Deliver = Callable[[Admission], None]
Need = dict[str, int]  # device key -> MiB


@dataclass
class _Request:
    ticket: int
    claim: Claim
    deliver: Deliver
    placed: Placement | None = None


@dataclass
class _Release:
    instance: str


@dataclass
class _Cancel:
    ticket: int


@dataclass
class _Tick:
    pass


@dataclass
class _Configure:
    budget: Budget
    wait_s: float


@dataclass(eq=False)
class _Pending:
    req: _Request
    since: float
    victims: tuple[str, ...] = ()  # chosen to make room (busy ones drain first)
    evicted: tuple[str, ...] = ()  # asked to stop for it
    why: str = ""


class Scheduler:
    def __init__(
        self,
        clock: Clock = SYSTEM_CLOCK,
        seats: Seats | None = None,
        overhead: Callable[[str], int] | None = None,
        offload: Offload = in_thread,
        devices: Callable[[str, tuple[str, ...]], Detected] = placement.detected_devices,
    ) -> None:
        self.clock = clock
        self.offload = offload  # device queries (free memory) run off the loop
        self.devices = devices  # a backend's devices now, for ``auto`` (placement.py)
        self.seats: Seats = seats or NoSeats()
        # MiB one more server process uses on a device beyond its estimate (issue 18:
        # daemon/overheads.py learns it); None: nothing beyond the estimate
        self.overhead = overhead
        self.budget = Budget()
        self.wait_s = 120.0  # gateway.json load_timeout: how long a start waits for room
        self.holders: dict[str, Claim] = {}  # instances admitted and holding resources
        self.evictions = 0
        self.decisions = 0
        self._inbox: asyncio.Queue[_Request | _Release | _Cancel | _Tick | _Configure] = (
            asyncio.Queue()
        )
        self._tickets = itertools.count(1)
        self._pending: dict[int, _Pending] = {}  # arrival order
        self._draining: dict[str, float] = {}  # victim -> when it was first chosen
        self._holds: dict[str, float] = {}  # victim -> its hold (see _hold)
        self._evicting: set[str] = set()  # asked to stop, not yet released
        self._defaults: dict[str, int] = {}  # device -> default budget (MiB)
        self._tasks: list[asyncio.Task[None]] = []
        self._releasing: set[asyncio.Task[None]] = set()  # grants waiting for a GPU

    def start(self) -> None:
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(self._run(), name="scheduler"),
                loop.create_task(self._ticker(), name="scheduler-ticker"),
            ]

    async def close(self) -> None:
        for task in (*self._tasks, *self._releasing):
            task.cancel()
        await asyncio.gather(*self._tasks, *self._releasing, return_exceptions=True)
        self._tasks = []

    def configure(self, budget: Budget, wait_s: float = 120.0) -> None:
        """New budgets (gateway.json loaded or reloaded); they apply from the next decision."""
        self._inbox.put_nowait(_Configure(budget, wait_s))

    def request(self, claim: Claim, deliver: Deliver) -> int:
        """Ask to admit ``claim``; ``deliver`` is called with the decision. Returns its ticket."""
        ticket = next(self._tickets)
        self._inbox.put_nowait(_Request(ticket, claim, deliver))
        return ticket

    def cancel(self, ticket: int) -> None:
        """The start behind ``ticket`` was called off: stop waiting (and evicting) for it."""
        self._inbox.put_nowait(_Cancel(ticket))

    def release(self, instance: str) -> None:
        """``instance`` holds nothing any more (stopped, exited, fatal).

        Taken at once (the caller runs on the scheduler's loop), so a start that follows
        at once (a start queued behind a stop) asks for admission again instead of
        keeping the one it just gave up; the decisions it frees run on the task.
        """
        self.holders.pop(instance, None)
        self._evicting.discard(instance)
        self._inbox.put_nowait(_Release(instance))

    def poke(self) -> None:
        """Something a waiting start depends on changed (a request ended): decide now."""
        if self._pending:
            self._inbox.put_nowait(_Tick())

    def holds(self, instance: str) -> bool:
        return instance in self.holders

    def evicting(self, instance: str) -> bool:
        """Asked to stop (to make room, or idle): it takes no new request from now on."""
        return instance in self._evicting

    def draining_since(self, instance: str) -> float | None:
        """When ``instance`` was chosen to make room (None: it is not being drained)."""
        return self._draining.get(instance)

    def hold(self, instance: str) -> float:
        """How long after it was chosen (or became ready, if later) a victim still takes
        new requests."""
        return self._holds.get(instance, 0.0)

    def waiting(self) -> list[str]:
        """Instances whose starts wait for room, in arrival order."""
        return [p.req.claim.instance for p in self._pending.values()]

    async def _ticker(self) -> None:
        while True:
            await self.clock.sleep(DRAIN_POLL_S if self._pending else TTL_POLL_S)
            self._inbox.put_nowait(_Tick())

    def _hurry(self) -> None:
        """A start now waits: look at its victims every DRAIN_POLL_S from now on, not at
        the end of a TTL_POLL_S sleep."""
        if len(self._tasks) == 2 and not self._tasks[1].done():
            self._tasks[1].cancel()
            self._tasks[1] = asyncio.get_running_loop().create_task(self._ticker())

    async def _run(self) -> None:
        while True:
            msg = await self._inbox.get()
            match msg:
                case _Release():
                    pass  # taken at once by release(); now decide what it frees
                case _Cancel():
                    self._pending.pop(msg.ticket, None)
                case _Configure():
                    self.budget, self.wait_s, self._defaults = msg.budget, msg.wait_s, {}
                case _Request():
                    req = await self._place(msg)
                    if req is not None:
                        await self._learn_defaults(req.claim)
                        self._admit(req)
                case _Tick():
                    self._reap_idle()
            self._settle()

    async def _learn_defaults(self, claim: Claim) -> None:
        """A device with no budget in gateway.json gets its free memory now, plus what
        the holders there are counted for (once per configuration)."""
        if claim.force:
            return
        for device in claim.memory_mb:
            if device in self.budget.memory_mb or device in self._defaults:
                continue
            self._learn(device, await self.offload(partial(self.seats.free_mib, device)))

    def _learn(self, device: str, free: int | None) -> None:
        if free is not None and device not in {**self.budget.memory_mb, **self._defaults}:
            held = sum(self.counted(c).get(device, 0) for c in self.holders.values())
            self._defaults[device] = free + held

    async def _place(self, req: _Request) -> _Request | None:
        """An ``auto`` claim on the device placement.py chooses (a restart's too), or
        refused when its backend has no device. Waiting starts hold their room (pinned)."""
        claim = req.claim
        backend = placement.auto_backend(claim.memory_mb)
        if backend is None:
            return req
        try:
            found = await self.offload(partial(self.devices, backend, claim.binary))
        except Exception as e:  # detection never raises; a scheduler that died would wedge
            found = Detected({}, f"device detection failed: {type(e).__name__}: {e}")
        if not found.free_mib:
            why = placement.no_device(backend, found.sources)
            self._deliver(req, Admission(req.ticket, False, why, code="device"))
            return None
        for device, free in found.free_mib.items():
            self._learn(device, free)
        others = [
            self.seats.seat(n, self.counted(c), self._draining.get(n), self.hold(n))
            for n, c in self.holders.items()
            if n != claim.instance
        ]
        others += [
            Seat(p.req.claim.instance, self.counted(p.req.claim), True)
            for p in self._pending.values()
        ]
        est = claim.memory_mb[f"{backend}:auto"]
        need = {d: est + (self.overhead(d) if self.overhead else 0) for d in found.free_mib}
        keys = list(found.free_mib)
        chosen = placement.place(
            backend, placement.candidates(keys, self._effective(), others), need
        )
        claim = replace(claim, memory_mb=placement.resolved(claim.memory_mb, chosen.device))
        return _Request(req.ticket, claim, req.deliver, chosen)

    def effective_budget(self) -> Budget:
        """The budgets decisions are taken on: gateway.json's, and the defaults learnt
        for devices it gives none (what the metrics and the web page show)."""
        return self._effective()

    def _effective(self) -> Budget:
        if not self._defaults:
            return self.budget
        return Budget(self.budget.max_running, {**self._defaults, **self.budget.memory_mb})

    def counted(self, claim: Claim) -> dict[str, int]:
        """What a claim counts for until its server is measured: its estimate plus the
        device's per-process overhead (issue 18; the host side of a GPU process has its
        own, gpu/overhead.py ``overhead_key``). Seats replace it with the measured
        peak once there is one (daemon/seats.py)."""
        over = self.overhead
        if over is None:
            return dict(claim.memory_mb)
        held = claim.memory_mb
        return {d: need + over(overhead_key(d, held)) for d, need in held.items() if need > 0}

    # -- decisions -----------------------------------------------------------------------

    def _admit(self, req: _Request) -> None:
        held = {name: c.endpoint for name, c in self.holders.items()}
        refused = endpoint_taken(req.claim.endpoint, held, req.claim.instance)
        if refused:
            self._deliver(req, Admission(req.ticket, False, refused, code="port"))
        elif req.claim.force or req.claim.instance in self.holders:
            self._grant(req)
        else:
            if not self._pending:
                self._hurry()
            self._pending[req.ticket] = _Pending(req, self.clock.monotonic())

    def _grant(self, req: _Request, victims: tuple[str, ...] = ()) -> None:
        self.holders[req.claim.instance] = req.claim
        gpus = {d: mb for d, mb in self.counted(req.claim).items() if d != "cpu"}
        if not victims or not gpus:
            self._deliver(req, Admission(req.ticket, True, victims=victims))
            return
        task = asyncio.get_running_loop().create_task(self._after_release(req, victims, gpus))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    async def _after_release(self, req: _Request, victims: tuple[str, ...], gpus: Need) -> None:
        """Its room is held from now; its load waits for the GPUs to show it (release.py)."""
        limit = self.wait_s if req.claim.wait_s is None else req.claim.wait_s
        said = await await_room(self.seats.free_mib, self.clock, gpus, limit, victims, self.offload)
        self._deliver(req, Admission(req.ticket, True, said, victims=victims))

    def _deliver(self, req: _Request, admission: Admission) -> None:
        self.decisions += 1
        if req.placed is not None:
            admission = replace(admission, device=req.placed.device, placed=req.placed.sentence)
        req.deliver(admission)

    def _settle(self) -> None:
        """Decide the waiting starts, in arrival order; stop the victims that can go."""
        budget = self._effective()
        now = self.clock.monotonic()
        ahead: list[Seat] = []  # earlier waiting starts: their room is spoken for
        promised: set[str] = set()  # their victims, and themselves: not for later starts
        draining: dict[str, float] = {}
        for ticket, p in self._in_turn(now):
            claim = p.req.claim
            if claim.instance in self.holders:  # admitted meanwhile (adopted, forced)
                del self._pending[ticket]
                self._grant(p.req, p.evicted)
                continue
            seats = [
                self.seats.seat(n, self.counted(c), self._draining.get(n), self.hold(n))
                for n, c in self.holders.items()
            ]
            need = self.counted(claim)
            choice = choose(claim.instance, need, [*seats, *ahead], budget, frozenset(promised))
            match choice:
                case Fits():
                    del self._pending[ticket]
                    self._grant(p.req, p.evicted)
                    continue
                case Never(why=why):
                    del self._pending[ticket]
                    self._deliver(p.req, Admission(ticket, False, why, code="budget"))
                    continue
                case Evict(victims=victims):
                    p.victims = victims
                    p.evicted += self._evict_drained(claim.instance, victims, seats, draining, now)
                    promised.update(victims)
                case Wait(why=why):
                    p.why = why
            if now - p.since > (self.wait_s if claim.wait_s is None else claim.wait_s):
                del self._pending[ticket]
                self._deliver(p.req, self._drain_timeout(p, seats, now))
                continue
            ahead.append(Seat(claim.instance, need, busy=True))
            promised.add(claim.instance)
        self._draining = draining
        self._holds = {n: h for n, h in self._holds.items() if n in draining}

    def _in_turn(self, now: float) -> list[tuple[int, _Pending]]:
        """The waiting starts in the order they get room: those already stopping victims
        first (their room is on its way), then those overdue (waited a quarter of their
        ``wait_s``), then by requests waiting for them, most first, then by age."""

        def rank(item: tuple[int, _Pending]) -> tuple[int, int, float]:
            p = item[1]
            if p.evicted:
                return (0, 0, p.since)
            limit = self.wait_s if p.req.claim.wait_s is None else p.req.claim.wait_s
            if now - p.since > limit / 4:
                return (1, 0, p.since)
            return (2, -self.seats.queued(p.req.claim.instance), p.since)

        return sorted(self._pending.items(), key=rank)

    def _hold(self, victim: str) -> float:
        """How long a victim keeps taking new requests once chosen and ready: one of its
        loads, the swap that evicting it now would cost again later (a quarter of
        ``wait_s`` at most)."""
        return min(max(self.seats.load_s(victim), 0.0), self.wait_s / 4)

    def _evict_drained(
        self,
        instance: str,
        victims: tuple[str, ...],
        seats: list[Seat],
        draining: dict[str, float],
        now: float,
    ) -> tuple[str, ...]:
        """Stop the victims that are idle now; the busy ones drain (marked since when)."""
        busy = {s.name for s in seats if s.busy}
        evicted: list[str] = []
        for victim in victims:
            draining[victim] = self._draining.get(victim, now)
            if victim not in self._holds:
                self._holds[victim] = self._hold(victim)
            if victim in busy or victim in self._evicting:
                continue
            self._evicting.add(victim)
            self.evictions += 1
            evicted.append(victim)
            self.seats.evict(victim, f"evicted to make room for {instance!r}")
        return tuple(evicted)

    def _drain_timeout(self, p: _Pending, seats: list[Seat], now: float) -> Admission:
        busy = [s.name for s in seats if s.busy and s.name in p.victims]
        waited = now - p.since
        if busy:
            why = (
                f"waited {waited:.0f} s for {', '.join(busy)} to finish their requests "
                f"so {p.req.claim.instance!r} could start (load_timeout)"
            )
        else:
            why = f"no room for {p.req.claim.instance!r} within {waited:.0f} s: {p.why}"
        return Admission(p.req.ticket, False, why, code="drain_timeout")

    def _reap_idle(self) -> None:
        """Stop instances idle past their ttl (never one with a request in flight)."""
        for name in list(self.holders):
            if name in self._evicting or name in self._draining:
                continue
            idle, ttl = self.seats.idle(name)
            if ttl > 0 and idle >= ttl and not math.isinf(idle):
                self._evicting.add(name)
                self.seats.evict(name, f"idle for {idle:.0f} s (ttl {ttl} s)")
