"""The daemon's side of /models/unload and keep_alive (issue 20), through a real actor.

The actor, its leases, the scheduler's view of it (daemon/seats.py) and the ttl sweep run
on one fake clock, as in test_budget.py; the gateway's side, with real servers and
clients, is in test_clients_models.py and test_ollama_api.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from actor_fakes import harness, inline
from conftest import free_port, write_config

from llama_orchestrator.daemon.actor import messages as m
from llama_orchestrator.daemon.actor.handlers import InstanceActor
from llama_orchestrator.daemon.directory import InstanceView
from llama_orchestrator.daemon.scheduler import TTL_POLL_S, Scheduler
from llama_orchestrator.daemon.seats import ActorSeats, GatewayQueues
from llama_orchestrator.engine.states import State
from llama_orchestrator.home import Home


def _run(home: Home, body: object) -> None:
    async def main() -> None:
        h = await harness(home)
        await h.ctx.scheduler.close()
        actors: dict[str, InstanceActor] = {}
        sched = Scheduler(h.clock, ActorSeats(actors, GatewayQueues().demand), offload=inline)
        h.ctx.scheduler = sched
        sched.start()
        actor = actors["alpha"] = InstanceActor("alpha", h.ctx, None)
        actor.start_loop()
        view = InstanceView(actor, lambda _name: None, sched)
        try:
            started = asyncio.ensure_future(actor.request(lambda r: m.Start(r, wait_ready=True)))
            while not started.done():
                await h.clock.advance(0.05)
            assert started.result().ok and actor.snapshot.state is State.RUNNING
            await body(h, actor, view)  # type: ignore[operator]
        finally:
            actor.cancel_tasks()
            await sched.close()
            await h.ctx.http.aclose()
            h.store.close()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_keep_alive_stops_an_instance_whose_config_says_never(home: Home, tiny_model: Path) -> None:
    """ttl 0 in the config (never idle-stopped); an Ollama keep_alive of 2 s stops it two
    seconds after its request, and the config's ttl is back once it stopped."""
    write_config(home, "alpha", tiny_model, free_port(), gateway={"ttl": 0})

    async def body(h: object, actor: InstanceActor, view: InstanceView) -> None:
        clock = h.clock  # type: ignore[attr-defined]
        assert view.acquire() is not None
        view.release()
        view.keep_alive(2)
        ended = clock.monotonic()
        while actor.snapshot.state is State.RUNNING and clock.monotonic() < ended + 10:
            await clock.advance(0.05)
        stopped = clock.monotonic()
        assert ended + 2.0 <= stopped <= ended + 2.0 + TTL_POLL_S + 0.1, (stopped, ended)
        reasons = h.reasons("alpha")  # type: ignore[attr-defined]
        assert any(r.endswith("(ttl 2 s)") for r in reasons), reasons
        assert view.state == "stopped"
        again = asyncio.ensure_future(actor.request(lambda r: m.Start(r, wait_ready=True)))
        while not again.done():
            await clock.advance(0.05)
        assert again.result().ok
        for _ in range(100):  # 10 s idle: the config's ttl 0 again, never stopped
            await clock.advance(0.1)
        assert actor.snapshot.state is State.RUNNING

    _run(home, body)


def test_unload_waits_for_the_lease_in_flight_and_takes_no_new_one(
    home: Home, tiny_model: Path
) -> None:
    write_config(home, "alpha", tiny_model, free_port())

    async def body(h: object, actor: InstanceActor, view: InstanceView) -> None:
        clock = h.clock  # type: ignore[attr-defined]
        assert view.acquire() is not None  # a request in flight
        unloading = asyncio.ensure_future(view.unload("unloaded through the gateway (alpha)"))
        for _ in range(20):
            await clock.advance(0.05)
        assert not unloading.done() and actor.snapshot.state is State.RUNNING
        assert view.cutoff == float("-inf")  # the router hands out no new lease
        view.release()
        while not unloading.done():
            await clock.advance(0.05)
        assert unloading.result().ok and actor.snapshot.state is State.STOPPED
        assert view.cutoff != float("-inf")  # a later start serves again

    _run(home, body)
