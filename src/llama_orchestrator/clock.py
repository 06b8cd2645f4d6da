"""Time, injected: monotonic time for delays and uptimes, wall time for records.

Everything in the daemon that waits or measures asks a ``Clock``, so timing logic
(backoff, health cadence, start deadlines, queue timeouts) runs in tests on a
``FakeClock`` in milliseconds, driven by ``advance``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def time(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


SYSTEM_CLOCK = SystemClock()


class FakeClock:
    """A clock that moves only when told to: ``await clock.advance(seconds)``.

    Sleepers wake in deadline order; between wake-ups the event loop runs until idle,
    so whatever a woken task posts is handled before time moves on.
    """

    def __init__(self, start: float = 1000.0, wall: float = 1_700_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall - start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._now + self._wall_offset

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), fut))
        await fut

    @property
    def next_deadline(self) -> float | None:
        live = [d for d, _, f in self._sleepers if not f.done()]
        return min(live) if live else None

    async def settle(self, rounds: int = 50) -> None:
        """Let the loop run what is ready (tasks posting to tasks) without moving time."""
        for _ in range(rounds):
            await asyncio.sleep(0)

    def block(self, seconds: float) -> None:
        """Time passes while nothing else runs: a callback that stalls the event loop.
        Sleepers due meanwhile wake late, at the next ``advance``."""
        self._now += seconds

    async def advance(self, seconds: float) -> None:
        target = self._now + seconds
        await self.settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, fut = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            if not fut.done():
                fut.set_result(None)
                await self.settle()
        self._now = max(self._now, target)  # a block() may have gone past it
        await self.settle()
