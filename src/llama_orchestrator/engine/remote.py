"""A server this machine does not run (issue 13), behind the same handle as a process.

The actor drives every instance through one state machine over a ``ServerProcess``.
For a remote instance that handle owns nothing: there is no PID, no group and no
signal; "starting" it is the readiness poll against its URL, and "stopping" it only
lets go of it (it leaves the routes; the server keeps running wherever it runs).
Every method that would signal answers that nothing was signalled.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from llama_orchestrator.engine.platform import current_platform
from llama_orchestrator.engine.process import ExitStatus, Identity, ServerProcess


@dataclass(frozen=True)
class Released(ExitStatus):
    """How a remote instance's run ended: let go of, its server untouched."""

    url: str = ""

    def describe(self) -> str:
        return f"taken out of routing; {self.url} was not signalled"


class RemoteServer(ServerProcess):
    """The handle of a remote instance's run: it "exits" only when let go of."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.identity = Identity(0, 0.0, [])  # pid 0: no process (shown as "-")
        self.platform = current_platform()
        self._released = asyncio.Event()

    def may_signal(self) -> bool:
        return False

    def listens_on(self, port: int) -> bool | None:
        return None  # cannot tell for another machine: its answer is the proof

    async def wait_exit(self) -> None:
        await self._released.wait()

    def has_exited(self) -> bool:
        return self._released.is_set()

    def signal_group(self, sig: int) -> bool:
        return False

    def graceful_signal(self) -> bool:
        return False

    def kill(self) -> bool:
        return False

    def reap(self) -> ExitStatus:
        return Released(None, None, self.url)

    async def stop(self, grace: float) -> ExitStatus:
        self._released.set()
        return self.reap()
