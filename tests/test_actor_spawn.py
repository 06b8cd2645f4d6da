"""A server's spawn (logs opened, ``Popen``) runs off the event loop and posts Spawned
(issue 17): histories on a fake clock with the spawn held, and the real launcher's
blocking part run in a thread."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from actor_fakes import Harness, harness
from test_actor_histories import config, start

from llama_orchestrator.daemon.actor import messages as m
from llama_orchestrator.daemon.actor.context import ProcessLauncher
from llama_orchestrator.daemon.actor.handlers import InstanceActor
from llama_orchestrator.engine.command import LaunchSpec
from llama_orchestrator.engine.states import Desired, State
from llama_orchestrator.errors import ErrorCode
from llama_orchestrator.home import Home

T = TypeVar("T")


class HeldSpawn:
    """Blocking work run at once, but for the ``held``-th call (1: a start's checks, 2:
    its spawn), which waits for ``release``."""

    def __init__(self, held: int) -> None:
        self.held = held
        self.asked = 0
        self.gate: asyncio.Future[None] | None = None

    async def __call__(self, work: Callable[[], T]) -> T:
        self.asked += 1
        if self.asked == self.held:
            self.gate = asyncio.get_running_loop().create_future()
            await self.gate
        return work()

    def release(self) -> None:
        assert self.gate is not None
        self.gate.set_result(None)


Scenario = Callable[[Harness, InstanceActor, HeldSpawn], Awaitable[None]]


def run(home: Home, scenario: Scenario) -> Harness:
    async def main() -> Harness:
        offload = HeldSpawn(held=2)
        h = await harness(home, offload=offload)
        actor = InstanceActor("alpha", h.ctx, None)
        actor.start_loop()
        try:
            await asyncio.wait_for(scenario(h, actor, offload), 10)
        finally:
            actor.cancel_tasks()
            await h.ctx.scheduler.close()
            await h.ctx.http.aclose()
            h.store.close()
        return h

    return asyncio.run(main())


def test_a_down_while_the_server_is_spawned_stops_it_once_it_exists(
    home: Home, tiny_model: Path
) -> None:
    config(home, tiny_model)

    async def scenario(h: Harness, actor: InstanceActor, spawn: HeldSpawn) -> None:
        up = await start(actor)
        await h.clock.advance(0.0)
        assert spawn.asked == 2 and actor.snapshot.state is State.STARTING
        assert not h.launcher.spawned and not up.done()  # being spawned, off the loop
        down = asyncio.ensure_future(actor.request(m.Stop))
        await h.clock.advance(0.0)
        assert not down.done() and actor.snapshot.desired is Desired.RUNNING
        spawn.release()  # the process exists now: the down is handled at once
        await h.clock.advance(0.1)
        assert (await down).ok and actor.snapshot.state is State.STOPPED
        outcome = await up
        assert not outcome.ok and outcome.error is ErrorCode.STOPPED
        assert len(h.launcher.spawned) == 1 and h.launcher.last.signals[0] == "TERM"
        assert actor.snapshot.desired is Desired.STOPPED

    h = run(home, scenario)
    assert h.states("alpha") == ["starting", "stopping", "stopped"]


def test_a_spawn_that_fails_off_the_loop_fails_the_start(home: Home, tiny_model: Path) -> None:
    config(home, tiny_model)

    async def scenario(h: Harness, actor: InstanceActor, spawn: HeldSpawn) -> None:
        h.launcher.fail_spawn = PermissionError(13, "Permission denied", "/no/llama-server")
        up = await start(actor)
        await h.clock.advance(0.0)
        spawn.release()
        await h.clock.advance(0.0)
        outcome = await up
        assert not outcome.ok and outcome.error is ErrorCode.SPAWN
        assert "Permission denied" in outcome.message
        assert actor.snapshot.state is not State.STARTING and not h.launcher.spawned

    run(home, scenario)


def test_the_real_launcher_spawns_in_a_thread(tmp_path: Path) -> None:
    """Its blocking part needs no event loop; the handle is made on the loop."""
    spec = LaunchSpec(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        {},
        tmp_path / "out.log",
        tmp_path / "err.log",
        tmp_path,
    )

    async def main() -> None:
        make = await asyncio.to_thread(ProcessLauncher().open, spec, "alpha")
        proc = make()
        try:
            assert proc.pid > 0 and not proc.has_exited()
        finally:
            proc.kill()
        await asyncio.wait_for(proc.wait_exit(), 10)

    asyncio.run(main())
