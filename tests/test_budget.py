"""Budgets and eviction (issue 11): the pure rules (daemon/budget.py), then the
scheduler acting on them on a fake clock with scripted instances (daemon/scheduler.py).
Real servers behind the gateway are in test_budget_daemon.py."""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from actor_fakes import harness, inline
from conftest import free_port, write_config

from llama_orchestrator.clock import FakeClock
from llama_orchestrator.daemon.actor import messages as m
from llama_orchestrator.daemon.actor.handlers import InstanceActor
from llama_orchestrator.daemon.budget import (
    Budget,
    Evict,
    Fits,
    Never,
    Seat,
    Wait,
    choose,
    eviction_order,
)
from llama_orchestrator.daemon.directory import InstanceView
from llama_orchestrator.daemon.scheduler import TTL_POLL_S, Admission, Claim, Scheduler
from llama_orchestrator.daemon.seats import ActorSeats, GatewayQueues
from llama_orchestrator.engine.states import State
from llama_orchestrator.home import Home

CPU = {"cpu": 1000}


def test_eviction_order_is_idle_then_priority_then_least_recently_used() -> None:
    seats = [
        Seat("busy-old", busy=True, last_used=1.0),
        Seat("idle-new", last_used=9.0),
        Seat("idle-old", last_used=2.0),
        Seat("idle-low-priority", priority=-5, last_used=8.0),
    ]
    order = [s.name for s in eviction_order(seats)]
    assert order == ["idle-low-priority", "idle-old", "idle-new", "busy-old"]


def test_only_as_many_victims_as_the_start_needs() -> None:
    seats = [Seat("a", CPU, last_used=1.0), Seat("b", CPU, last_used=2.0), Seat("c", CPU)]
    budget = Budget(memory_mb={"cpu": 3500})
    assert choose("d", CPU, seats, budget) == Evict(("c",))  # c was used longest ago
    assert choose("d", {"cpu": 1600}, seats, budget) == Evict(("c", "a"))
    assert choose("d", {"cpu": 400}, seats, budget) == Fits()
    assert choose("d", {}, seats, Budget(max_running=4)) == Fits()
    assert choose("d", {}, seats, Budget(max_running=2)) == Evict(("c", "a"))


def test_pinned_are_never_victims_and_an_impossible_start_says_what_is_missing() -> None:
    seats = [Seat("big", {"cpu": 3000}, pinned=True), Seat("small", {"cpu": 500})]
    budget = Budget(memory_mb={"cpu": 4000})
    assert choose("new", {"cpu": 900}, seats, budget) == Evict(("small",))
    never = choose("new", {"cpu": 1200}, seats, budget)
    assert isinstance(never, Never)
    assert "1200 MiB on cpu" in never.why and "4000 MiB" in never.why
    assert "pinned instances hold 3000 MiB (big)" in never.why and "200 MiB missing" in never.why
    count = choose("new", {}, [Seat("p", pinned=True)], Budget(max_running=1))
    assert isinstance(count, Never) and "max_running is 1" in count.why and "(p)" in count.why


def test_a_victim_promised_to_another_start_is_not_taken_twice() -> None:
    seats = [Seat("a"), Seat("b")]
    budget = Budget(max_running=2)
    assert choose("c", {}, seats, budget) == Evict(("a",))
    assert choose("d", {}, seats, budget, frozenset({"a"})) == Evict(("b",))
    assert isinstance(choose("e", {}, seats, budget, frozenset({"a", "b"})), Wait)


# -- the scheduler, on a fake clock ------------------------------------------------------


@dataclass
class FakeSeat:
    busy: bool = False
    pinned: bool = False
    idle_s: float = 0.0
    ttl: int = 0
    queued: int = 0  # requests waiting for it in the gateway
    load_s: float = 0.0  # its last load


class FakeSeats:
    """Scripted instances: the test says which are busy; evictions are recorded and
    released on the scheduler as the real actor's stop would."""

    def __init__(self) -> None:
        self.seats: defaultdict[str, FakeSeat] = defaultdict(FakeSeat)
        self.evicted: list[tuple[str, str]] = []
        self.scheduler: Scheduler | None = None

    def seat(
        self, name: str, memory_mb: dict[str, int], draining: float | None, hold: float = 0.0
    ) -> Seat:
        s = self.seats[name]
        return Seat(name, memory_mb, pinned=s.pinned, busy=s.busy)

    def idle(self, name: str) -> tuple[float, int]:
        s = self.seats[name]
        return (0.0 if s.busy else s.idle_s), s.ttl

    def evict(self, name: str, reason: str) -> None:
        self.evicted.append((name, reason))
        assert self.scheduler is not None
        self.scheduler.release(name)

    def free_mib(self, device: str) -> int | None:
        return 2000

    def queued(self, name: str) -> int:
        return self.seats[name].queued

    def load_s(self, name: str) -> float:
        return self.seats[name].load_s


Scenario = Callable[[Scheduler, FakeSeats, FakeClock], Awaitable[None]]


def run(scenario: Scenario, budget: Budget, wait_s: float = 30.0) -> None:
    async def main() -> None:
        clock = FakeClock()
        seats = FakeSeats()
        sched = Scheduler(clock, seats, offload=inline)
        seats.scheduler = sched
        sched.configure(budget, wait_s)
        sched.start()
        try:
            await scenario(sched, seats, clock)
        finally:
            await sched.close()

    asyncio.run(main())


def ask(sched: Scheduler, claim: Claim) -> list[Admission]:
    got: list[Admission] = []
    sched.request(claim, got.append)
    return got


def test_two_concurrent_cold_starts_under_a_budget_of_one_never_share_a_victim() -> None:
    async def scenario(sched: Scheduler, seats: FakeSeats, clock: FakeClock) -> None:
        a = ask(sched, Claim("a"))
        await clock.advance(0.01)
        assert a and a[0].granted and sched.holders.keys() == {"a"}
        seats.seats["a"].busy = True  # serving a request
        b, c = ask(sched, Claim("b")), ask(sched, Claim("c"))
        seats.seats["b"].busy = True  # once admitted it loads: busy too
        await clock.advance(1.0)
        assert not b and not c and seats.evicted == []  # a is never cut
        assert sched.waiting() == ["b", "c"] and sched.draining_since("a") is not None
        seats.seats["a"].busy = False  # its request ended: now it can go
        await clock.advance(0.05)
        assert seats.evicted == [("a", "evicted to make room for 'b'")]
        assert b and b[0].granted and b[0].victims == ("a",) and not c
        assert sched.holders.keys() == {"b"}  # never two at once
        sched.release("b")  # b stopped (by hand): c gets the room, and evicts nothing
        await clock.advance(0.05)
        assert c and c[0].granted and c[0].victims == () and len(seats.evicted) == 1

    run(scenario, Budget(max_running=1))


def test_a_start_waits_for_a_busy_victim_no_longer_than_the_load_timeout() -> None:
    async def scenario(sched: Scheduler, seats: FakeSeats, clock: FakeClock) -> None:
        ask(sched, Claim("a"))
        await clock.advance(0.01)
        seats.seats["a"].busy = True
        b = ask(sched, Claim("b"))
        await clock.advance(29.0)
        assert not b
        await clock.advance(1.5)
        assert b and not b[0].granted and b[0].code == "drain_timeout"
        assert "for a to finish their requests" in b[0].reason and "(load_timeout)" in b[0].reason
        assert seats.evicted == [] and sched.holders.keys() == {"a"}
        assert sched.draining_since("a") is None  # no longer a victim

    run(scenario, Budget(max_running=1), wait_s=30.0)


def test_pinned_full_budget_refuses_at_once_and_force_goes_past_it() -> None:
    async def scenario(sched: Scheduler, seats: FakeSeats, clock: FakeClock) -> None:
        seats.seats["p"] = FakeSeat(pinned=True)
        ask(sched, Claim("p", memory_mb={"cpu": 1500}))
        await clock.advance(0.01)
        refused = ask(sched, Claim("q", memory_mb={"cpu": 800}))
        await clock.advance(0.01)
        assert refused and not refused[0].granted and refused[0].code == "budget"
        assert "300 MiB missing" in refused[0].reason and "(p)" in refused[0].reason
        forced = ask(sched, Claim("q", memory_mb={"cpu": 800}, force=True))
        await clock.advance(0.01)
        assert forced and forced[0].granted and seats.evicted == []

    run(scenario, Budget(memory_mb={"cpu": 2000}))


def test_default_memory_budget_is_the_free_memory_when_none_is_configured() -> None:
    async def scenario(sched: Scheduler, seats: FakeSeats, clock: FakeClock) -> None:
        # FakeSeats reports 2000 MiB free on every device
        ok = ask(sched, Claim("a", memory_mb={"cuda:0": 1500}))
        await clock.advance(0.01)
        assert ok and ok[0].granted
        later = ask(sched, Claim("b", memory_mb={"cuda:0": 1000}))
        await clock.advance(0.05)
        assert (
            later and later[0].granted and seats.evicted == [("a", "evicted to make room for 'b'")]
        )

    run(scenario, Budget())


def test_a_cancelled_start_stops_waiting_and_evicts_nothing() -> None:
    async def scenario(sched: Scheduler, seats: FakeSeats, clock: FakeClock) -> None:
        ask(sched, Claim("a"))
        await clock.advance(0.01)
        seats.seats["a"].busy = True
        got: list[Admission] = []
        ticket = sched.request(Claim("b"), got.append)
        await clock.advance(0.5)
        sched.cancel(ticket)
        seats.seats["a"].busy = False
        await clock.advance(1.0)
        assert got == [] and seats.evicted == [] and sched.waiting() == []

    run(scenario, Budget(max_running=1))


def test_idle_ttl_stops_an_idle_instance_and_never_a_busy_one() -> None:
    async def scenario(sched: Scheduler, seats: FakeSeats, clock: FakeClock) -> None:
        seats.seats["long"] = FakeSeat(busy=True, ttl=5)  # a stream longer than its ttl
        seats.seats["quiet"] = FakeSeat(idle_s=0.0, ttl=5)
        seats.seats["kept"] = FakeSeat(idle_s=100.0, ttl=0)  # ttl 0: never
        for name in seats.seats:
            ask(sched, Claim(name))
        await clock.advance(2.0)
        assert seats.evicted == []
        seats.seats["quiet"].idle_s = 6.0
        seats.seats["long"].idle_s = 60.0  # still busy: its idle time does not count
        await clock.advance(1.5)
        assert seats.evicted == [("quiet", "idle for 6 s (ttl 5 s)")]
        seats.seats["long"].busy = False  # its stream ended a minute ago by now
        await clock.advance(1.5)
        assert seats.evicted[-1] == ("long", "idle for 60 s (ttl 5 s)") and len(seats.evicted) == 2

    run(scenario, Budget())


def test_a_busy_victim_keeps_taking_requests_for_one_of_its_load_times() -> None:
    async def scenario(sched: Scheduler, seats: FakeSeats, clock: FakeClock) -> None:
        seats.seats["a"].load_s = 1.5  # its last load took 1.5 s
        ask(sched, Claim("a"))
        await clock.advance(0.01)
        seats.seats["a"].busy = True
        chosen = clock.monotonic()
        b = ask(sched, Claim("b"))
        await clock.advance(0.1)
        # requests for a that arrive within 1.5 s of it being chosen are still its own
        since = sched.draining_since("a")
        assert since is not None and abs(since - chosen) < 0.05 and sched.hold("a") == 1.5
        seats.seats["a"].busy = False
        await clock.advance(0.05)
        assert b and b[0].granted and seats.evicted[0][0] == "a"

    run(scenario, Budget(max_running=1))


def test_the_hold_is_at_most_a_quarter_of_the_load_timeout() -> None:
    async def scenario(sched: Scheduler, seats: FakeSeats, clock: FakeClock) -> None:
        seats.seats["a"].load_s = 100.0
        ask(sched, Claim("a"))
        await clock.advance(0.01)
        seats.seats["a"].busy = True
        chosen = clock.monotonic()
        ask(sched, Claim("b"))
        await clock.advance(0.1)
        since = sched.draining_since("a")
        assert since is not None and abs(since - chosen) < 0.05 and sched.hold("a") == 30.0 / 4

    run(scenario, Budget(max_running=1), wait_s=30.0)


def test_the_start_with_the_longest_queue_gets_the_room_first() -> None:
    async def scenario(sched: Scheduler, seats: FakeSeats, clock: FakeClock) -> None:
        ask(sched, Claim("a"))
        await clock.advance(0.01)
        seats.seats["a"].busy = True
        seats.seats["b"].queued, seats.seats["c"].queued = 1, 3
        seats.seats["b"].busy = seats.seats["c"].busy = True  # once admitted, they load
        b = ask(sched, Claim("b"))  # arrived first, one request waits for it
        await clock.advance(0.01)
        c = ask(sched, Claim("c"))  # three wait for it
        await clock.advance(0.1)
        seats.seats["a"].busy = False
        await clock.advance(0.05)
        assert c and c[0].granted and c[0].victims == ("a",) and not b
        assert sched.waiting() == ["b"]

    run(scenario, Budget(max_running=1))


def test_a_start_waiting_a_quarter_of_the_load_timeout_goes_before_longer_queues() -> None:
    async def scenario(sched: Scheduler, seats: FakeSeats, clock: FakeClock) -> None:
        ask(sched, Claim("a"))
        await clock.advance(0.01)
        seats.seats["a"].busy = True
        seats.seats["b"].queued, seats.seats["c"].queued = 1, 3
        seats.seats["b"].busy = seats.seats["c"].busy = True
        b = ask(sched, Claim("b"))
        await clock.advance(8.0)  # past 30 s / 4: b is overdue
        c = ask(sched, Claim("c"))
        await clock.advance(0.1)
        seats.seats["a"].busy = False
        await clock.advance(0.05)
        assert b and b[0].granted and not c

    run(scenario, Budget(max_running=1), wait_s=30.0)


def test_the_hold_counts_from_ready_when_a_victim_is_chosen_while_it_loads() -> None:
    from types import SimpleNamespace

    from llama_orchestrator.daemon.seats import cutoff
    from llama_orchestrator.engine.states import State

    loading = SimpleNamespace(state=State.STARTING, ready_mono=0.0)
    assert cutoff(loading, 10.0, 0.8) == math.inf  # type: ignore[arg-type]
    ready = SimpleNamespace(state=State.RUNNING, ready_mono=11.0)  # chosen at 10, ready at 11
    assert cutoff(ready, 10.0, 0.8) == 11.8  # type: ignore[arg-type]
    assert cutoff(ready, 12.0, 0.8) == 12.8  # type: ignore[arg-type]
    assert cutoff(ready, None, 0.8) == math.inf  # type: ignore[arg-type]


# -- the idle ttl through a real actor, on a fake clock ----------------------------------


def test_a_request_longer_than_the_ttl_is_not_cut_and_the_ttl_counts_from_its_end(
    home: Home, tiny_model: Path
) -> None:
    """A lease held past the ttl (a long stream) keeps the instance running; it is
    stopped for being idle one ttl after the lease ends (issue 11). The actor, its leases,
    the scheduler's view of it (daemon/seats.py) and the ttl sweep run together on one
    fake clock; that a real stream holds its lease to its end is shown with real servers
    in test_budget_daemon.py."""
    write_config(home, "alpha", tiny_model, free_port(), gateway={"ttl": 1})

    async def main() -> None:
        h = await harness(home)
        await h.ctx.scheduler.close()  # the harness's own, on the system clock
        actors: dict[str, InstanceActor] = {}
        sched = Scheduler(h.clock, ActorSeats(actors, GatewayQueues().demand), offload=inline)
        h.ctx.scheduler = sched
        sched.start()
        actor = actors["alpha"] = InstanceActor("alpha", h.ctx, None)
        actor.start_loop()
        view = InstanceView(actor, lambda _name: None, sched)
        try:
            started = asyncio.ensure_future(actor.request(lambda r: m.Start(r, wait_ready=True)))
            while not started.done():  # the health checks answer on the fake clock
                await h.clock.advance(0.05)
            assert started.result().ok and actor.snapshot.state is State.RUNNING
            assert view.acquire() is not None  # a request begins
            for _ in range(30):  # 30 s in flight under a ttl of 1 s: never cut
                await h.clock.advance(1.0)
            assert actor.snapshot.state is State.RUNNING and not sched.evicting("alpha")
            await h.clock.advance(TTL_POLL_S / 2)  # between sweeps: a ttl counted from the
            view.release()  # request's start would stop it at the next sweep, too soon
            ended = h.clock.monotonic()

            def idle_stops() -> list[str]:
                return [r for r in h.reasons("alpha") if r.startswith("idle for ")]

            step = 0.05
            while not idle_stops() and h.clock.monotonic() < ended + 10:
                await h.clock.advance(step)
            stopped = h.clock.monotonic()
            assert len(idle_stops()) == 1, h.reasons("alpha")
            assert idle_stops()[0].endswith(" s (ttl 1 s)"), idle_stops()
            # no sooner than a ttl after the request ended, at the sweep after that
            assert ended + 1.0 <= stopped <= ended + 1.0 + TTL_POLL_S + step, (stopped, ended)
        finally:
            actor.cancel_tasks()
            await sched.close()
            await h.ctx.http.aclose()
            h.store.close()

    asyncio.run(asyncio.wait_for(main(), 30))
