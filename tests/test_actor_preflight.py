"""A start's checks run off the event loop as a side task that posts its result (issue
17): histories of commands that arrive while they run, on a fake clock, with the checks
held until the history lets them finish."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from actor_fakes import Harness, harness
from test_actor_histories import config, start

from llama_orchestrator.config.loader import load_instance
from llama_orchestrator.daemon.actor import messages as m
from llama_orchestrator.daemon.actor.handlers import InstanceActor
from llama_orchestrator.daemon.actor.preflight import Plan, prepare_start
from llama_orchestrator.daemon.offload import in_thread
from llama_orchestrator.engine.states import Desired, State
from llama_orchestrator.errors import ErrorCode
from llama_orchestrator.home import Home

T = TypeVar("T")


class HeldChecks:
    """Blocking work that waits for ``release`` (the checks of a start still running);
    after ``release`` it runs at once (the spawn that follows) until ``hold`` again."""

    def __init__(self) -> None:
        self.asked = 0
        self.holding = True
        self._gates: list[asyncio.Future[None]] = []

    async def __call__(self, work: Callable[[], T]) -> T:
        self.asked += 1
        if self.holding:
            gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._gates.append(gate)
            await gate
        return work()

    def hold(self) -> None:
        self.holding = True

    @property
    def running(self) -> int:
        return sum(1 for g in self._gates if not g.done())

    def release(self) -> None:
        self.holding = False
        for gate in self._gates:
            if not gate.done():
                gate.set_result(None)


Scenario = Callable[[Harness, InstanceActor, HeldChecks], Awaitable[None]]


def run(home: Home, scenario: Scenario, row: dict[str, Any] | None = None) -> Harness:
    async def main() -> Harness:
        checks = HeldChecks()
        h = await harness(home, offload=checks)
        actor = InstanceActor("alpha", h.ctx, row)
        actor.start_loop()
        try:
            await asyncio.wait_for(scenario(h, actor, checks), 10)
        finally:
            actor.cancel_tasks()
            await h.ctx.scheduler.close()
            await h.ctx.http.aclose()
            h.store.close()
        return h

    return asyncio.run(main())


def test_down_while_the_checks_run_calls_the_start_off(home: Home, tiny_model: Path) -> None:
    config(home, tiny_model)

    async def scenario(h: Harness, actor: InstanceActor, checks: HeldChecks) -> None:
        up = await start(actor)
        await h.clock.advance(0.0)
        assert checks.running == 1 and actor.snapshot.state is State.STOPPED and not up.done()
        down = await actor.request(m.Stop)
        assert down.ok and actor.snapshot.desired is Desired.STOPPED
        outcome = await up
        assert not outcome.ok and outcome.error is ErrorCode.STOPPED
        checks.release()  # the checks were called off with the start: nothing follows
        await h.clock.advance(1.0)
        assert not h.launcher.spawned and actor.snapshot.state is State.STOPPED

    h = run(home, scenario)
    assert h.states("alpha") == []


def test_a_late_result_of_checks_called_off_is_ignored(home: Home, tiny_model: Path) -> None:
    config(home, tiny_model)

    async def scenario(h: Harness, actor: InstanceActor, checks: HeldChecks) -> None:
        up = await start(actor)
        await h.clock.advance(0.0)
        assert (await actor.request(m.Stop)).ok and (await up).error is ErrorCode.STOPPED
        plan = prepare_start(home, "alpha", load_instance(home, "alpha"))
        assert isinstance(plan, Plan)
        actor.post(m.Prepared(1, plan))  # the first start's checks, had they finished
        await h.clock.advance(1.0)
        assert not h.launcher.spawned and actor.snapshot.state is State.STOPPED

    run(home, scenario)


def test_up_while_the_checks_run_joins_the_start(home: Home, tiny_model: Path) -> None:
    config(home, tiny_model)

    async def scenario(h: Harness, actor: InstanceActor, checks: HeldChecks) -> None:
        first = await start(actor)
        second = await start(actor)
        restart = asyncio.ensure_future(actor.request(m.Restart))
        await h.clock.advance(0.0)
        assert checks.asked == 1  # one set of checks for the three callers
        checks.release()
        await h.clock.advance(0.05)
        outcomes = [await first, await second, await restart]
        assert all(o.ok for o in outcomes), outcomes
        assert len(h.launcher.spawned) == 1 and actor.snapshot.state is State.RUNNING

    h = run(home, scenario)
    assert h.states("alpha") == ["starting", "running"]


def test_down_then_up_while_the_first_checks_run_starts_once(home: Home, tiny_model: Path) -> None:
    config(home, tiny_model)

    async def scenario(h: Harness, actor: InstanceActor, checks: HeldChecks) -> None:
        first = await start(actor)
        await h.clock.advance(0.0)
        assert (await actor.request(m.Stop)).ok
        second = await start(actor)
        await h.clock.advance(0.0)
        assert checks.asked == 2 and checks.running == 1  # the first was called off
        checks.release()
        await h.clock.advance(0.05)
        assert (await first).error is ErrorCode.STOPPED and (await second).ok
        assert len(h.launcher.spawned) == 1 and actor.snapshot.state is State.RUNNING

    run(home, scenario)


def test_down_while_an_automatic_restart_is_checked(home: Home, tiny_model: Path) -> None:
    config(home, tiny_model, restart_policy={"backoff_base": 1.0})

    async def scenario(h: Harness, actor: InstanceActor, checks: HeldChecks) -> None:
        up = await start(actor)
        await h.clock.advance(0.0)
        checks.release()
        await h.clock.advance(0.05)
        assert (await up).ok
        checks.hold()
        h.launcher.last.die(1)  # the first failure restarts at once: its checks run
        await h.clock.advance(0.0)
        assert actor.snapshot.state is State.BACKOFF and checks.running == 1
        assert (await actor.request(m.Stop)).ok
        checks.release()
        await h.clock.advance(5.0)
        assert actor.snapshot.state is State.STOPPED and len(h.launcher.spawned) == 1

    h = run(home, scenario)
    assert h.states("alpha")[-2:] == ["backoff", "stopped"]


def test_a_refusal_found_by_the_checks_reaches_the_caller(home: Home, tiny_model: Path) -> None:
    config(home, tiny_model)
    home.config_path("alpha").write_text("{not json")

    async def scenario(h: Harness, actor: InstanceActor, checks: HeldChecks) -> None:
        up = await start(actor)
        await h.clock.advance(0.0)
        assert not up.done()
        checks.release()
        await h.clock.advance(0.0)
        outcome = await up
        assert not outcome.ok and outcome.error is ErrorCode.CONFIG_INVALID
        assert not h.launcher.spawned and actor.snapshot.state is State.STOPPED

    run(home, scenario)


def test_the_daemon_runs_the_checks_in_a_thread() -> None:
    async def main() -> tuple[int, int]:
        return threading.get_ident(), await in_thread(threading.get_ident)

    loop_thread, worker = asyncio.run(main())
    assert worker != loop_thread
