"""The machinery every actor shares: an inbox, a run loop, side tasks, replies.

Commands from clients wait for an ``Outcome``; at most ``MAX_PENDING_COMMANDS`` may be
queued (then "busy"), so a flood of requests cannot grow the inbox without bound.
Reports from the actor's own tasks are never refused: each task posts at most one at a
time. ``dispatch`` (the subclass's) runs every message to completion without awaiting.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from llama_orchestrator.daemon.actor import messages as m
from llama_orchestrator.daemon.actor.messages import Outcome
from llama_orchestrator.errors import ErrorCode

log = logging.getLogger("llama_orchestrator.supervisor")

MAX_PENDING_COMMANDS = 64


class Mailbox:
    def __init__(self, name: str) -> None:
        self.name = name
        self._inbox: asyncio.Queue[m.Message] = asyncio.Queue()
        self._pending_commands = 0
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._runner: asyncio.Task[None] | None = None

    def _dispatch(self, msg: m.Message) -> None:
        raise NotImplementedError

    def _publish(self, **record: Any) -> None:
        """Show readers what changed (the subclass's snapshot); after every message."""

    # -- plumbing ----------------------------------------------------------------------

    def start_loop(self) -> None:
        self._runner = asyncio.get_running_loop().create_task(
            self._run(), name=f"actor-{self.name}"
        )

    def post(self, report: m.Report) -> None:
        """A report from a side task or the daemon (never refused)."""
        self._inbox.put_nowait(report)

    async def request(self, make: Callable[[m.Reply], m.Command]) -> Outcome:
        """Send a command and await its outcome; "busy" when too many are queued.

        ``make`` builds the command around its reply future: ``actor.request(m.Stop)``.
        """
        if self._pending_commands >= MAX_PENDING_COMMANDS:
            busy = f"{self.name} has {self._pending_commands} commands queued; retry"
            return Outcome(False, busy, error=ErrorCode.BUSY)
        reply: m.Reply = asyncio.get_running_loop().create_future()
        self._pending_commands += 1
        self._inbox.put_nowait(make(reply))
        return await reply

    async def _run(self) -> None:
        while True:
            msg = await self._inbox.get()
            if isinstance(msg, m.Start | m.Stop | m.Restart):
                self._pending_commands -= 1
            try:
                self._dispatch(msg)
            except Exception as e:  # keep the actor alive; a caller gets the reason
                log.exception("%s: error handling %s", self.name, type(msg).__name__)
                reply = getattr(msg, "reply", None)
                if reply is not None and not reply.done():
                    reply.set_result(
                        Outcome(False, f"internal error: {e}", error=ErrorCode.INTERNAL)
                    )
            self._publish()

    def _spawn_task(self, key: str, coro: Coroutine[Any, Any, None]) -> None:
        self._cancel_task(key)
        self._tasks[key] = asyncio.get_running_loop().create_task(coro)

    def _cancel_task(self, key: str) -> None:
        task = self._tasks.pop(key, None)
        if task is not None and not task.done():
            task.cancel()

    def cancel_tasks(self) -> None:
        for key in list(self._tasks):
            self._cancel_task(key)
        if self._runner is not None:
            self._runner.cancel()
