"""On-demand starts behind a circuit breaker (issue 9, on-demand).

A name none of whose members is running starts one member: one ``ensure_started`` per
instance at a time, whatever the number of requests waiting for it. An instance whose
starts keep failing (``breaker_failures`` within ``breaker_window`` seconds) is not
started again for ``breaker_cooldown`` seconds; after the cool-down one attempt is
allowed, and its failure opens the breaker again at once. The ``Router`` asks ``assess``
why a request has no lease and is told when a start has ended.
"""

from __future__ import annotations

import asyncio
import collections
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from llama_orchestrator.clock import Clock
from llama_orchestrator.gateway.backend import Instance, StartResult
from llama_orchestrator.gateway.errors import GatewayError
from llama_orchestrator.gateway.settings import GatewaySettings

# Instance states in which the daemon is already bringing it up: wait, do not start.
COMING_UP = frozenset({"starting", "backoff", "running"})


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


class Starter:
    """The starts in flight and the breakers; ``on_done`` hears of each start's end."""

    def __init__(
        self,
        settings: GatewaySettings,
        clock: Clock,
        on_done: Callable[[Instance, StartResult], None],
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._on_done = on_done
        self._starts: dict[str, _Start] = {}
        self._breakers: dict[str, _Breaker] = {}
        self.calls: collections.Counter[str] = collections.Counter()

    def reconfigure(self, settings: GatewaySettings) -> None:
        self._settings = settings

    def starting(self) -> list[str]:
        return sorted(self._starts)

    def assess(
        self, members: Sequence[Instance], failed: dict[str, str] | None = None
    ) -> tuple[bool, str | None]:
        """Why there is no lease now: (False, None) when a member is up but busy (wait
        for a slot), (True, name) when a member is coming up (wait for it; one is started
        on demand when needed; a member that runs but fails its health checks is waited
        for only when no other member can be started). Raises 503 when nothing can come
        up."""
        failed = failed or {}
        for inst in members:
            if inst.routable and inst.name not in failed:
                return False, None
        for inst in members:
            if inst.name in self._starts:
                return True, inst.name
        sick: str | None = None  # running but failing its checks (a remote gone away)
        for inst in members:
            if inst.name in failed or inst.state not in COMING_UP:
                continue
            if inst.state != "running":
                return True, inst.name
            sick = sick or inst.name
        reasons: list[str] = []
        retry_after: float | None = None
        now = self._clock.monotonic()
        for inst in members:
            if inst.name in failed:
                reasons.append(f"instance {inst.name!r} could not start: {failed[inst.name]}")
                continue
            if inst.state in COMING_UP:
                continue  # the sick one: a sibling that can start goes first
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
        if sick is not None:  # nothing else can come up: wait for it to recover
            return True, sick
        code = "circuit_open" if retry_after is not None else "instance_unavailable"
        raise GatewayError(503, code, "; ".join(reasons) or "no instance", retry_after=retry_after)

    def _start(self, inst: Instance) -> None:
        if inst.name in self._starts:
            return
        task = asyncio.get_running_loop().create_task(self._run(inst))
        self._starts[inst.name] = _Start(self._clock.monotonic(), task)

    async def _run(self, inst: Instance) -> None:
        self.calls[inst.name] += 1
        try:
            result = await inst.ensure_started()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            result = StartResult(False, f"{type(e).__name__}: {e}")
        finally:
            self._starts.pop(inst.name, None)
        self._trip(inst, result)
        self._on_done(inst, result)

    def _trip(self, inst: Instance, result: StartResult) -> None:
        """Count a start's outcome on the instance's breaker."""
        if result.ok:
            self._breakers.pop(inst.name, None)
            return
        now = self._clock.monotonic()
        s = self._settings
        b = self._breakers.setdefault(inst.name, _Breaker())
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

    def cancel(self) -> list[asyncio.Task[None]]:
        """Cancel every start in flight; the caller awaits the tasks returned."""
        tasks = [s.task for s in self._starts.values()]
        for task in tasks:
            task.cancel()
        return tasks
