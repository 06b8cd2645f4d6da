"""Blocking work off the shared event loop (issue 17): one seam for it.

The gateway and the daemon share one loop, so file reads, DNS, socket probes, GGUF
reads and device queries (nvidia-smi) run through an ``Offload``: the real one is the
loop's default thread pool; tests inject one that runs the work inline, so a test on the
fake clock waits for nothing that runs outside it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

T = TypeVar("T")


class Offload(Protocol):
    """Runs blocking work away from the event loop and returns its result."""

    def __call__(self, work: Callable[[], T], /) -> Awaitable[T]: ...


def in_thread(work: Callable[[], T]) -> Awaitable[T]:
    """The real thing: the loop's default thread pool."""
    return asyncio.to_thread(work)
