"""The clock the gateway waits on: monotonic time and sleep, injectable for tests.

Structurally the same as the daemon's clock (``monotonic()`` and ``sleep()``), so the
daemon can pass its own.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


SYSTEM_CLOCK = SystemClock()
