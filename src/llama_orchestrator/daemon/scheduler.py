"""The scheduler: the one daemon-wide place that decides which instance may start.

Instance actors ask it for admission before they spawn a server, and tell it when a
server no longer holds resources (stopped, failed for good). It answers asynchronously,
through the callback the actor gave, so an actor never blocks on a decision and keeps
answering its own inbox (a ``down`` while a start waits for admission is handled at
once).

All decisions are taken in order on the scheduler's own loop, from its own table of
holders: two cold starts can never both claim one victim, both fit in the same free
memory, or both take one port (two instances configured on one port: the second is
refused while the first holds it). No memory or count budget exists yet; budgets,
eviction and queueing extend ``_decide`` (the gateway issues build on this seam).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from llama_orchestrator.config.portcheck import hosts_overlap


@dataclass(frozen=True)
class Claim:
    """What a start would hold while it runs."""

    instance: str
    endpoint: tuple[str, int] | None = None  # host, port its server listens on
    memory_mb: dict[str, int] = field(default_factory=dict)  # device key -> MiB


@dataclass(frozen=True)
class Admission:
    ticket: int
    granted: bool
    reason: str = ""
    victims: tuple[str, ...] = ()  # instances to stop first (none without budgets)


Deliver = Callable[[Admission], None]


@dataclass
class _Request:
    ticket: int
    claim: Claim
    deliver: Deliver


@dataclass
class _Release:
    instance: str


class Scheduler:
    def __init__(self) -> None:
        self.holders: dict[str, Claim] = {}  # instances admitted and holding resources
        self._inbox: asyncio.Queue[_Request | _Release] = asyncio.Queue()
        self._tickets = itertools.count(1)
        self._runner: asyncio.Task[None] | None = None
        self.decisions = 0

    def start(self) -> None:
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run(), name="scheduler")

    async def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
            self._runner = None

    def request(self, claim: Claim, deliver: Deliver) -> int:
        """Ask to admit ``claim``; ``deliver`` is called with the decision. Returns its ticket."""
        ticket = next(self._tickets)
        self._inbox.put_nowait(_Request(ticket, claim, deliver))
        return ticket

    def release(self, instance: str) -> None:
        """``instance`` holds nothing any more (stopped, exited, fatal)."""
        self._inbox.put_nowait(_Release(instance))

    def holds(self, instance: str) -> bool:
        return instance in self.holders

    async def _run(self) -> None:
        while True:
            msg = await self._inbox.get()
            if isinstance(msg, _Release):
                self.holders.pop(msg.instance, None)
                continue
            admission = self._decide(msg)
            self.decisions += 1
            if admission.granted:
                self.holders[msg.claim.instance] = msg.claim
            msg.deliver(admission)

    def _decide(self, req: _Request) -> Admission:
        """Refused when another holder listens on the same host:port; no budgets yet."""
        want = req.claim.endpoint
        for name, held in self.holders.items():
            if name == req.claim.instance or want is None or held.endpoint is None:
                continue
            if held.endpoint[1] == want[1] and hosts_overlap(held.endpoint[0], want[0]):
                return Admission(
                    req.ticket,
                    False,
                    f"port {want[1]} is already in use by instance {name!r} "
                    f"({held.endpoint[0]}:{held.endpoint[1]} is also used by instance {name!r})",
                )
        return Admission(req.ticket, True)
