"""Scripted histories of one instance actor, in-process, on a fake clock (issue 8).

A fake launcher hands out scripted processes and the health probes are answered by a
mock transport, so crash loops, backoff timing, stops during loading and starts during
stopping run in milliseconds. The real paths are tested against real servers elsewhere.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from actor_fakes import Harness, harness
from conftest import free_port, write_config

from llama_orchestrator.daemon.actor import messages as m
from llama_orchestrator.daemon.actor.handlers import InstanceActor
from llama_orchestrator.daemon.directory import InstanceView
from llama_orchestrator.daemon.events import Event, EventKind
from llama_orchestrator.engine.states import Desired, Health, State
from llama_orchestrator.errors import ErrorCode
from llama_orchestrator.home import Home
from llama_orchestrator.state.records import InstanceRecord


def no_config(_name: str) -> None:
    return None


Scenario = Callable[[Harness, InstanceActor], Awaitable[None]]


def unpublished(actor: InstanceActor, event: Event) -> str | None:
    """What an event says that the actor's snapshot did not show yet when it was
    published (sinks, such as the gateway's wake-up on a state change, read it then)."""
    snap = actor.snapshot
    if event.kind is EventKind.STATE and snap.state.value != event.new:
        return f"state {event.new} announced, snapshot shows {snap.state.value}"
    if event.kind is EventKind.HEALTH and snap.health.value != event.new:
        return f"health {event.new} announced, snapshot shows {snap.health.value}"
    if event.kind is EventKind.SPAWNED and not (snap.attached and snap.loaded):
        return "spawned announced before the snapshot holds the run and its config"
    return None


def run(home: Home, scenario: Scenario, row: dict[str, Any] | None = None) -> Harness:
    async def main() -> Harness:
        h = await harness(home)
        record = InstanceRecord.from_row({"name": "alpha", **row}) if row else None
        actor = InstanceActor("alpha", h.ctx, record)
        late: list[str] = []
        h.ctx.bus.add_sink(lambda e: late.extend(filter(None, [unpublished(actor, e)])))
        actor.start_loop()
        try:
            await asyncio.wait_for(scenario(h, actor), 10)
        finally:
            actor.cancel_tasks()
            await h.ctx.scheduler.close()
            await h.ctx.http.aclose()
            h.store.close()
        assert not late, late  # every change is on the snapshot before it is announced
        return h

    return asyncio.run(main())


def config(home: Home, model: Path, **overrides: Any) -> int:
    port = free_port()
    hc = {"interval": 5, "timeout": 2, "retries": 3, "start_period": 30}
    hc.update(overrides.pop("healthcheck", {}))
    write_config(home, "alpha", model, port, healthcheck=hc, **overrides)
    return port


async def start(actor: InstanceActor, wait: bool = True) -> asyncio.Task[m.Outcome]:
    task = asyncio.ensure_future(actor.request(lambda r: m.Start(r, wait_ready=wait)))
    await asyncio.sleep(0)
    return task


def test_crash_loop_backs_off_then_gives_up(home: Home, tiny_model: Path) -> None:
    policy = {
        "max_retries": 3,
        "backoff_base": 1.0,
        "backoff_multiplier": 2.0,
        "backoff_max": 60.0,
        "stable_after": 10,
    }
    config(home, tiny_model, restart_policy=policy)

    async def scenario(h: Harness, actor: InstanceActor) -> None:
        first = await start(actor)
        await h.clock.advance(0.05)
        assert (await first).ok and actor.snapshot.state is State.RUNNING
        spawn_times = [h.clock.monotonic()]
        for _ in range(4):
            h.launcher.last.die(1)
            before = len(h.launcher.spawned)
            for _ in range(200):  # in 50 ms steps until the restart (or fatal)
                await h.clock.advance(0.05)
                if len(h.launcher.spawned) > before or actor.snapshot.state is State.FATAL:
                    break
            spawn_times.append(h.clock.monotonic())
            await h.clock.advance(0.05)  # let the new one become ready
        assert actor.snapshot.state is State.FATAL
        assert "gave up after 3 restart(s)" in h.reasons("alpha")[-1]
        # first failure restarts at once, then 1 s, 2 s (failures 2 and 3); the 4th gives up
        gaps = [b - a for a, b in itertools.pairwise(spawn_times)]
        assert gaps[0] < 0.15
        assert 1.0 <= gaps[1] < 1.25 and 2.0 <= gaps[2] < 2.25, gaps
        assert len(h.launcher.spawned) == 4  # the first start and three restarts
        assert h.store.record("alpha").restart_count == 3

    h = run(home, scenario)
    assert h.states("alpha").count("backoff") == 3


def test_backoff_timing_is_exact_on_the_clock(home: Home, tiny_model: Path) -> None:
    policy = {"backoff_base": 4.0, "backoff_multiplier": 3.0, "stable_after": 100}
    config(home, tiny_model, restart_policy=policy)

    async def scenario(h: Harness, actor: InstanceActor) -> None:
        await start(actor)
        await h.clock.advance(0.05)
        h.launcher.last.die(1)  # failure 1: at once
        await h.clock.advance(0.05)
        assert len(h.launcher.spawned) == 2
        h.launcher.last.die(1)  # failure 2 (not stable yet): base = 4 s
        await h.clock.advance(0.0)
        assert actor.snapshot.state is State.BACKOFF
        await h.clock.advance(3.99)
        assert actor.snapshot.state is State.BACKOFF and len(h.launcher.spawned) == 2
        await h.clock.advance(0.02)
        assert actor.snapshot.state in (State.STARTING, State.RUNNING)
        assert len(h.launcher.spawned) == 3
        await h.clock.advance(0.05)
        h.launcher.last.die(1)  # failure 3: 4 * 3 = 12 s
        await h.clock.advance(11.9)
        assert len(h.launcher.spawned) == 3
        await h.clock.advance(0.2)
        assert len(h.launcher.spawned) == 4

    run(home, scenario)


def test_stable_run_resets_the_failure_streak(home: Home, tiny_model: Path) -> None:
    config(
        home,
        tiny_model,
        restart_policy={"stable_after": 10, "backoff_base": 5.0},
        healthcheck={"interval": 60},
    )

    async def scenario(h: Harness, actor: InstanceActor) -> None:
        await start(actor)
        await h.clock.advance(0.05)
        h.launcher.last.die(1)
        await h.clock.advance(0.05)  # restarted at once (failure 1)
        await h.clock.advance(10.5)  # healthy longer than stable_after
        h.launcher.last.die(1)
        await h.clock.advance(0.05)  # failure 1 again, not 2: at once, no 5 s backoff
        assert len(h.launcher.spawned) == 3
        assert actor.snapshot.failures == 1

    run(home, scenario)


def test_stop_during_loading(home: Home, tiny_model: Path) -> None:
    config(home, tiny_model)

    async def scenario(h: Harness, actor: InstanceActor) -> None:
        h.launcher.script.append({"mode": "loading", "term_delay": 0.5})
        up = await start(actor)
        await h.clock.advance(0.1)
        assert actor.snapshot.state is State.STARTING and actor.snapshot.health is Health.LOADING
        down = asyncio.ensure_future(actor.request(m.Stop))
        await h.clock.advance(0.0)
        # the actor answered at once: the start's caller is told, the stop is under way
        assert up.done() and up.result().error is ErrorCode.STOPPED
        assert "still loading" in up.result().message
        assert actor.snapshot.state is State.STOPPING and not down.done()
        await h.clock.advance(0.6)
        assert (await down).ok and actor.snapshot.state is State.STOPPED
        assert actor.snapshot.desired is Desired.STOPPED
        assert h.launcher.last.signals == ["TERM", "KILL"]  # the group kill after exit

    h = run(home, scenario)
    assert h.states("alpha") == ["starting", "stopping", "stopped"]


def test_actor_answers_while_a_slow_stop_runs(home: Home, tiny_model: Path) -> None:
    config(home, tiny_model, server={"stop_timeout": 10})

    async def scenario(h: Harness, actor: InstanceActor) -> None:
        h.launcher.script.append({"ignores_term": True})
        await start(actor)
        await h.clock.advance(0.05)
        first = asyncio.ensure_future(actor.request(m.Stop))
        await h.clock.advance(1.0)
        assert actor.snapshot.state is State.STOPPING
        # a second command is taken at once, not after the 10 s grace
        up = await start(actor, wait=False)
        await h.clock.advance(0.0)
        assert actor.snapshot.desired is Desired.RUNNING and not up.done()
        await h.clock.advance(9.1)  # grace over: SIGKILL, stopped, then the queued start
        assert (await first).ok
        result = await up
        assert result.ok and result.accepted and result.pid == h.launcher.last.pid
        await h.clock.advance(0.05)
        assert actor.snapshot.state is State.RUNNING and len(h.launcher.spawned) == 2

    run(home, scenario)


def test_start_during_stopping_runs_after_the_stop(home: Home, tiny_model: Path) -> None:
    config(home, tiny_model)

    async def scenario(h: Harness, actor: InstanceActor) -> None:
        h.launcher.script.append({"term_delay": 2.0})
        await start(actor)
        await h.clock.advance(0.05)
        down = asyncio.ensure_future(actor.request(m.Stop))
        await h.clock.advance(0.5)
        up = await start(actor)
        await h.clock.advance(2.0)
        assert (await down).ok
        await h.clock.advance(0.05)
        assert (await up).ok and actor.snapshot.state is State.RUNNING

    h = run(home, scenario)
    assert h.states("alpha") == [
        "starting",
        "running",
        "stopping",
        "stopped",
        "starting",
        "running",
    ]


def test_concurrent_restarts_coalesce_into_one(home: Home, tiny_model: Path) -> None:
    config(home, tiny_model)

    async def scenario(h: Harness, actor: InstanceActor) -> None:
        h.launcher.script.append({"term_delay": 0.3})
        await start(actor)
        await h.clock.advance(0.05)
        restarts = [asyncio.ensure_future(actor.request(m.Restart)) for _ in range(5)]
        await h.clock.advance(0.5)
        outcomes = await asyncio.gather(*restarts)
        assert all(o.ok for o in outcomes), outcomes
        assert len(h.launcher.spawned) == 2  # one restart for five callers

    run(home, scenario)


def test_detached_start_reports_a_refusal(home: Home, tiny_model: Path) -> None:
    port = config(home, tiny_model)

    async def scenario(h: Harness, actor: InstanceActor) -> None:
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", port))
            holder.listen()
            outcome = await (await start(actor, wait=False))
        assert not outcome.ok and outcome.error is ErrorCode.PORT_IN_USE
        assert f"port {port} is already in use" in outcome.message
        assert not h.launcher.spawned and actor.snapshot.state is State.STOPPED

    run(home, scenario)


def test_detached_start_is_accepted_before_ready(home: Home, tiny_model: Path) -> None:
    config(home, tiny_model)

    async def scenario(h: Harness, actor: InstanceActor) -> None:
        h.launcher.script.append({"mode": "loading"})
        outcome = await (await start(actor, wait=False))
        assert outcome.ok and outcome.accepted and outcome.message == "starting"
        assert actor.snapshot.state is State.STARTING

    run(home, scenario)


def test_unresolvable_host_on_restart_is_a_counted_failure_not_backoff_forever(
    home: Home, tiny_model: Path
) -> None:
    config(home, tiny_model, restart_policy={"max_retries": 2, "backoff_base": 0.5})

    async def scenario(h: Harness, actor: InstanceActor) -> None:
        await start(actor)
        await h.clock.advance(0.05)
        cfg = home.config_path("alpha")
        cfg.write_text(cfg.read_text().replace('"127.0.0.1"', '"no-such-host.invalid"'))
        h.launcher.last.die(None, 9)
        await h.clock.advance(5.0)
        assert actor.snapshot.state is State.FATAL
        assert len(h.launcher.spawned) == 1

    h = run(home, scenario)
    refused = [e.reason or "" for e in h.events if e.kind.value == "start_refused"]
    assert refused and all("server.host" in r and "no-such-host.invalid" in r for r in refused)


def test_failing_health_checks_restart_the_server(home: Home, tiny_model: Path) -> None:
    config(home, tiny_model, healthcheck={"interval": 1, "retries": 3, "timeout": 1})

    async def scenario(h: Harness, actor: InstanceActor) -> None:
        await start(actor)
        await h.clock.advance(0.05)
        h.launcher.last.mode = "error"
        await h.clock.advance(2.05)
        assert actor.snapshot.health is Health.UNHEALTHY and actor.snapshot.misses == 2
        view = InstanceView(actor, no_config, h.ctx.scheduler)
        assert actor.snapshot.state is State.RUNNING and view.acquire() is None
        await h.clock.advance(1.0)  # third miss: stopped and restarted
        await h.clock.advance(0.1)
        assert len(h.launcher.spawned) == 2 and h.launcher.spawned[0].signals[0] == "TERM"
        assert actor.snapshot.state is State.RUNNING and actor.snapshot.health is Health.HEALTHY

    h = run(home, scenario)
    assert "stopping" in h.states("alpha") and "backoff" in h.states("alpha")


def test_leases_count_in_flight_and_last_use(home: Home, tiny_model: Path) -> None:
    config(home, tiny_model)

    async def scenario(h: Harness, actor: InstanceActor) -> None:
        view = InstanceView(actor, no_config, h.ctx.scheduler)
        assert view.acquire() is None  # not running
        await start(actor)
        await h.clock.advance(0.05)
        a, b = view.acquire(), view.acquire()
        assert a is not None and b is not None and a.instance == "alpha"
        assert a.base_url.startswith("http://127.0.0.1:") and actor.leases.in_flight == 2
        await h.clock.advance(3.0)
        view.release()
        assert actor.leases.idle_for() == 0.0 and view.in_flight == 1  # one still in flight
        view.release()
        await h.clock.advance(2.0)
        assert actor.leases.idle_for() == pytest.approx(2.0)

    run(home, scenario)


def test_a_start_asked_for_by_a_person_that_fails_is_not_retried(
    home: Home, tiny_model: Path
) -> None:
    config(home, tiny_model, restart_policy={"max_retries": 5})

    async def scenario(h: Harness, actor: InstanceActor) -> None:
        h.launcher.script.append({"mode": "loading"})
        up = await start(actor)
        await h.clock.advance(0.05)
        h.launcher.last.die(1)  # it dies while loading: before it was ever ready
        outcome = await up
        assert not outcome.ok and outcome.error is ErrorCode.START_FAILED
        await h.clock.advance(30.0)
        assert actor.snapshot.state is State.FATAL and len(h.launcher.spawned) == 1
        assert "not retried" in (h.store.record("alpha").last_error or "")

    h = run(home, scenario)
    assert h.states("alpha") == ["starting", "fatal"]


def test_a_200_from_another_process_on_the_port_is_not_readiness(
    home: Home, tiny_model: Path
) -> None:
    config(home, tiny_model, healthcheck={"start_period": 6})

    async def scenario(h: Harness, actor: InstanceActor) -> None:
        h.launcher.script.append({"mode": "stranger"})
        up = await start(actor)
        await h.clock.advance(2.0)
        assert actor.snapshot.state is State.STARTING and not up.done()
        await h.clock.advance(5.0)  # the start period runs out: a failed start, not "ready"
        outcome = await up
        assert not outcome.ok and "another process answers on the port" in outcome.message

    run(home, scenario)


def test_an_explicit_up_resets_the_restart_count(home: Home, tiny_model: Path) -> None:
    config(home, tiny_model)

    async def scenario(h: Harness, actor: InstanceActor) -> None:
        await start(actor)
        await h.clock.advance(0.05)
        h.launcher.last.die(1)  # an automatic restart counts
        await h.clock.advance(0.1)
        assert actor.snapshot.restart_count == 1 and actor.snapshot.state is State.RUNNING
        down = asyncio.ensure_future(actor.request(m.Stop))
        await h.clock.advance(0.1)
        assert (await down).ok
        await start(actor)
        await h.clock.advance(0.1)
        assert actor.snapshot.restart_count == 0
        assert h.store.record("alpha").restart_count == 0

    run(home, scenario)


def test_checks_failed_while_the_daemons_loop_stalled_do_not_count(
    home: Home, tiny_model: Path
) -> None:
    """A client that stalls the daemon's loop (issue 19: a 512 MiB header) made every
    check time out; the supervisor restarted healthy servers. Such a check is the
    daemon's fault: it is not counted, and the event says so."""
    config(home, tiny_model, healthcheck={"interval": 1, "retries": 3, "timeout": 1})

    async def scenario(h: Harness, actor: InstanceActor) -> None:
        await start(actor)
        await h.clock.advance(0.05)
        proc = h.launcher.last
        proc.mode, proc.stall = "stalled", 2.0  # each check: the loop blocked for 2 s
        await h.clock.advance(12.0)  # far past interval x retries
        assert actor.snapshot.misses == 0 and actor.snapshot.health is Health.HEALTHY
        proc.mode = "ok"
        await h.clock.advance(1.0)
        proc.mode = "hang"  # a real hang, the loop running: counted, and restarted
        for _ in range(40):
            await h.clock.advance(0.25)
        assert len(h.launcher.spawned) == 2 and proc.signals[0] == "TERM"

    h = run(home, scenario)
    assert len(h.launcher.spawned) == 2
    health = [e.reason or "" for e in h.events if e.kind is EventKind.HEALTH]
    skipped = [r for r in health if "not counted" in r]
    assert len(skipped) >= 4, health
    assert "timed out while the daemon's own event loop was stalled for" in skipped[0]
    assert "not the server's" in skipped[0]
    assert "timed out (1/3)" in " ".join(health)  # the real hang is counted


def test_a_start_is_not_failed_for_the_time_the_daemons_loop_was_stalled(
    home: Home, tiny_model: Path
) -> None:
    config(home, tiny_model, healthcheck={"start_period": 5})

    async def scenario(h: Harness, actor: InstanceActor) -> None:
        h.launcher.script.append({"mode": "stalled"})
        task = await start(actor)
        await h.clock.settle()
        h.launcher.last.stall = 3.0
        for _ in range(20):  # 4 probes of 3 s stall each: past start_period, the loop's fault
            await h.clock.advance(0.5)
        assert actor.snapshot.state is State.STARTING
        h.launcher.last.mode = "ok"
        await h.clock.advance(0.05)
        outcome = await task
        assert outcome.ok and actor.snapshot.state is State.RUNNING

    run(home, scenario)
