"""In-process fakes for driving an instance actor through scripted histories.

A ``FakeLauncher`` hands out ``FakeProcess`` objects instead of spawning; the health
probes go through an ``httpx.MockTransport`` that answers from each fake server's mode;
time is a ``FakeClock``. Real servers are tested elsewhere (test_lifecycle, test_faults).
"""

from __future__ import annotations

import asyncio
import itertools
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from llama_orchestrator.clock import FakeClock
from llama_orchestrator.daemon.actor.context import ActorContext
from llama_orchestrator.daemon.configs import Configs
from llama_orchestrator.daemon.events import Event, EventBus
from llama_orchestrator.daemon.offload import Offload
from llama_orchestrator.daemon.recorder import Recorder
from llama_orchestrator.daemon.scheduler import Scheduler
from llama_orchestrator.engine.command import LaunchSpec
from llama_orchestrator.engine.process import ExitStatus, Identity, ServerProcess
from llama_orchestrator.engine.states import State
from llama_orchestrator.home import Home
from llama_orchestrator.state.db import StateStore

_pids = itertools.count(50_000)
T = TypeVar("T")


class FakeProcess(ServerProcess):
    def __init__(
        self,
        clock: FakeClock,
        port: int,
        *,
        mode: str = "ok",
        term_delay: float = 0.0,
        ignores_term: bool = False,
    ) -> None:
        self.identity = Identity(next(_pids), 0.0, ["fake-llama-server"])
        self.clock = clock
        self.port = port
        # what /health answers: ok, loading, error, down, hang; "stranger": 200 from
        # another process that holds the port (this one does not listen on it)
        self.mode = mode
        self.term_delay = term_delay
        self.ignores_term = ignores_term
        self.signals: list[str] = []
        self.stall = 0.0  # seconds each check blocks the loop in mode "stalled"
        self._status: ExitStatus | None = None
        self._exited: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def die(self, code: int | None = None, sig: int | None = None) -> None:
        if self._status is None:
            self._status = ExitStatus(code, sig)
            self.mode = "down"
            self._exited.set_result(None)

    def has_exited(self) -> bool:
        return self._exited.done()

    async def wait_exit(self) -> None:
        await asyncio.shield(self._exited)

    def may_signal(self) -> bool:
        return not self.has_exited()

    def listens_on(self, port: int) -> bool | None:
        return self.port == port and not self.has_exited() and self.mode != "stranger"

    def graceful_signal(self) -> bool:
        self.signals.append("TERM")
        if not self.ignores_term:
            asyncio.get_running_loop().create_task(self._exit_later())
        return True

    async def _exit_later(self) -> None:
        await self.clock.sleep(self.term_delay)
        self.die(0)

    def kill(self) -> bool:
        self.signals.append("KILL")
        self.die(None, signal.SIGKILL)
        return True

    def reap(self) -> ExitStatus:
        return self._status or ExitStatus(None, None)

    async def stop(self, grace: float) -> ExitStatus:
        if not self.has_exited():
            self.graceful_signal()
            waiter = asyncio.ensure_future(self.wait_exit())
            timer = asyncio.ensure_future(self.clock.sleep(grace))
            await asyncio.wait({waiter, timer}, return_when=asyncio.FIRST_COMPLETED)
            timer.cancel()
            waiter.cancel()
        self.kill()
        return self.reap()


@dataclass
class FakeLauncher:
    clock: FakeClock
    # one entry per spawn, in order: keyword arguments of FakeProcess (default: a healthy one)
    script: list[dict[str, Any]] = field(default_factory=list)
    spawned: list[FakeProcess] = field(default_factory=list)
    fail_spawn: OSError | None = None

    def spawn(self, spec: LaunchSpec, name: str) -> ServerProcess:
        if self.fail_spawn is not None:
            raise self.fail_spawn
        port = int(spec.argv[spec.argv.index("--port") + 1])
        kw = self.script.pop(0) if self.script else {}
        proc = FakeProcess(self.clock, port, **kw)
        self.spawned.append(proc)
        return proc

    def open(self, spec: LaunchSpec, name: str) -> Callable[[], ServerProcess]:
        if self.fail_spawn is not None:
            raise self.fail_spawn
        return lambda: self.spawn(spec, name)

    def adopt(self, pid: int, create_time: float, cmdline: list[str]) -> ServerProcess | None:
        return None

    def rotate(self, path: Path, max_bytes: int, keep: int) -> None:
        return None

    @property
    def last(self) -> FakeProcess:
        return self.spawned[-1]

    def transport(self) -> httpx.MockTransport:
        def answer(request: httpx.Request) -> httpx.Response:
            live = [p for p in self.spawned if p.port == request.url.port and not p.has_exited()]
            mode = live[-1].mode if live else "down"
            if mode == "down":
                raise httpx.ConnectError("connection refused", request=request)
            if mode == "hang":
                raise httpx.ReadTimeout("timed out", request=request)
            if mode == "stalled":  # the daemon's own loop blocked past the check's timeout
                live[-1].clock.block(live[-1].stall)
                raise httpx.ReadTimeout("timed out", request=request)
            if mode == "loading":
                return httpx.Response(503, json={"error": {"message": "Loading model"}})
            if mode == "error":
                return httpx.Response(500, text="broken")
            return httpx.Response(200, json={"status": "ok"})

        return httpx.MockTransport(answer)


@dataclass
class Harness:
    home: Home
    store: StateStore
    clock: FakeClock
    launcher: FakeLauncher
    ctx: ActorContext
    events: list[Event]

    def states(self, name: str) -> list[str]:
        return [e.new or "" for e in self.events if e.instance == name and e.kind.value == "state"]

    def reasons(self, name: str) -> list[str]:
        return [
            e.reason or "" for e in self.events if e.instance == name and e.kind.value == "state"
        ]


async def inline(work: Callable[[], T]) -> T:
    """Blocking work run at once on the loop: a history on the fake clock does not depend
    on when a thread gets to run."""
    return work()


async def harness(home: Home, offload: Offload = inline) -> Harness:
    home.ensure()
    clock = FakeClock()
    launcher = FakeLauncher(clock)
    store = StateStore(home.db_path)
    bus = EventBus()
    seen: list[Event] = []
    bus.add_sink(Recorder(store))
    bus.add_sink(seen.append)
    scheduler = Scheduler(offload=inline)  # the actor's work goes through ``offload``
    scheduler.start()
    ctx = ActorContext(
        home=home,
        store=store,
        bus=bus,
        http=httpx.AsyncClient(transport=launcher.transport()),
        scheduler=scheduler,
        configs=Configs(home, bus),
        launcher=launcher,
        clock=clock,
        offload=offload,
    )
    return Harness(home, store, clock, launcher, ctx, seen)


__all__ = ["FakeLauncher", "FakeProcess", "Harness", "State", "harness"]
