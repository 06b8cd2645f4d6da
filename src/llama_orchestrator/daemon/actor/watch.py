"""An actor's side tasks. Each one waits or probes, then posts what it saw; none of
them changes the actor's state or writes the state store (the actor does, on its loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import httpx

from llama_orchestrator.clock import Clock
from llama_orchestrator.config.schema import HealthcheckConfig
from llama_orchestrator.daemon.actor.messages import (
    BackoffDone,
    Checked,
    Exited,
    Loading,
    NotReady,
    Ready,
    Report,
    Stopped,
    VersionKnown,
)
from llama_orchestrator.engine.binary import ResolvedBinary
from llama_orchestrator.engine.health import Probe, probe_completion, probe_health
from llama_orchestrator.engine.process import ServerProcess
from llama_orchestrator.engine.states import Health

Post = Callable[[Report], None]
log = logging.getLogger("llama_orchestrator.supervisor")

READY_POLL_S = 0.005  # /health polling while a server starts (adds half of it to a load)
MIN_READY_DEADLINE_S = 5.0
LAG_TICK_S = 0.1  # how often the loop's lag is sampled while a check is in flight


async def watch_exit(proc: ServerProcess, post: Post) -> None:
    await proc.wait_exit()
    post(Exited(proc))


LOOP_DETECTED = 508  # the gateway's answer to a request that came back to it
LOOP_SAID = (
    "its URL is this daemon's own gateway (it answered 508 loop_detected): point "
    "remote.url at the server itself"
)


async def await_ready(
    proc: ServerProcess,
    url: str,
    hc: HealthcheckConfig,
    http: httpx.AsyncClient,
    clock: Clock,
    post: Post,
    before_ready: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """Poll /health until 200 (Ready), the deadline (NotReady) or the process exits. The
    deadline moves on by as long as the daemon's own loop was stalled meanwhile: that
    time was not the server's to use. ``before_ready`` runs between the first 200 and
    Ready (saved slots restored, issue 21), so no request reaches the server before it."""
    lag = LoopLag(clock)
    try:
        await _await_ready(proc, url, hc, http, clock, post, lag, before_ready)
    finally:
        lag.stop()


async def _await_ready(
    proc: ServerProcess,
    url: str,
    hc: HealthcheckConfig,
    http: httpx.AsyncClient,
    clock: Clock,
    post: Post,
    lag: LoopLag,
    before_ready: Callable[[], Awaitable[object]] | None = None,
) -> None:
    t0 = clock.monotonic()
    wait = max(hc.start_period, MIN_READY_DEADLINE_S)
    deadline = t0 + wait
    loading_seen = False
    port = int(url.rsplit(":", 1)[1])
    stranger = False
    while not proc.has_exited():
        probe = await probe_health(http, url, hc.path, hc.timeout)
        # A 200 proves readiness only from our own server: another process on the port
        # (an instance configured with the same one) answers too (issue 10).
        if probe.ok and proc.listens_on(port) is not False:
            ready_ms = (clock.monotonic() - t0) * 1000.0
            if before_ready is not None:
                await before_ready()
            post(Ready(proc, ready_ms))
            return
        if probe.ok and not stranger:
            stranger = True
            log.warning("port %s answers, but not from pid %s: waiting", port, proc.pid)
        if probe.status_code == LOOP_DETECTED:  # a remote URL that is our own gateway
            post(NotReady(proc, LOOP_SAID))
            return
        if probe.health is Health.LOADING and not loading_seen:
            loading_seen = True
            post(Loading(proc))
        if clock.monotonic() > deadline + lag.value():
            last = "another process answers on the port" if stranger else probe.detail
            post(NotReady(proc, f"not ready after {wait:g}s (last check: {last})"))
            return
        await clock.sleep(READY_POLL_S)


class LoopLag:
    """How late this event loop ran a timer while one check was in flight.

    A check that fails while the daemon's own loop was stalled (a client that makes the
    gateway parse a huge request, a blocking call) says nothing about the server: its
    answer may have arrived in time and been read too late. A ticker that wakes every
    ``LAG_TICK_S`` adds up how late each wake-up came; ``stop`` includes the tick that is
    overdue but has not run yet (a stall still going on when the check returned).
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lag = 0.0
        self._due = clock.monotonic() + LAG_TICK_S
        self._task = asyncio.ensure_future(self._tick())

    async def _tick(self) -> None:
        while True:
            await self._clock.sleep(max(0.0, self._due - self._clock.monotonic()))
            now = self._clock.monotonic()
            self._lag += max(0.0, now - self._due)
            self._due = now + LAG_TICK_S

    def value(self) -> float:
        return self._lag + max(0.0, self._clock.monotonic() - self._due)

    def stop(self) -> float:
        self._task.cancel()
        return self.value()


async def _check(clock: Clock, timeout: float, probe: Awaitable[Probe]) -> tuple[Probe, float]:
    """Run one probe; a failed one comes with the loop's lag during it when that lag took
    half of its timeout or more (the daemon's fault, never the server's), else 0."""
    lag = LoopLag(clock)
    try:
        result = await probe
    finally:
        stalled = lag.stop()
    if result.ok or stalled < timeout / 2:
        stalled = 0.0
    return result, stalled


async def monitor(
    proc: ServerProcess,
    url: str,
    hc: HealthcheckConfig,
    http: httpx.AsyncClient,
    clock: Clock,
    post: Post,
) -> None:
    """A check every ``interval`` on a fixed cadence, until the actor cancels it.

    A check that times out does not push the next one back, so a hang is caught within
    interval x retries + timeout. With ``probe: completion`` every ``probe_every``-th
    check also asks for a one-token completion. A check that failed while this loop was
    stalled carries the stall (``loop_lag``): the actor does not count it.
    """
    n = 0
    due = clock.monotonic() + hc.interval
    while not proc.has_exited():
        await clock.sleep(max(0.0, due - clock.monotonic()))
        due = max(due + hc.interval, clock.monotonic())
        n += 1
        probe, lag = await _check(clock, hc.timeout, probe_health(http, url, hc.path, hc.timeout))
        deeper = probe.ok and hc.probe == "completion" and n % hc.probe_every == 0
        post(Checked(proc, "health", probe, final=not deeper, loop_lag=lag))
        if deeper:
            probe, lag = await _check(clock, hc.timeout, probe_completion(http, url, hc.timeout))
            post(Checked(proc, "completion", probe, True, loop_lag=lag))


async def stop_process(proc: ServerProcess, grace: float, why: str, post: Post) -> None:
    post(Stopped(proc, await proc.stop(grace), why))


async def backoff_timer(delay: float, generation: int, clock: Clock, post: Post) -> None:
    await clock.sleep(delay)
    post(BackoffDone(generation))


async def record_version(binary: ResolvedBinary, post: Post) -> None:
    version = None
    with contextlib.suppress(Exception):  # a version is nice to have, never worth a failure
        version = await asyncio.to_thread(binary.version)
    post(VersionKnown(version))
