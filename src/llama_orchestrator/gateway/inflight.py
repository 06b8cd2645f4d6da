"""The gateway's requests in flight, for the web page's Activity screen (issue 12).

Each model request is entered when its model is known and leaves when it is recorded
(every request ends in exactly one record, whatever way it ends: a queued request granted
a slot just after its client went is recorded as 499 too). Entries are keyed by the
request object itself, which the table holds, so no later request can take an entry's
key (``id()`` of a freed request can be reused). Cancelling one aborts
its client connection: the gateway's own disconnect path then closes the instance's
connection at once (llama-server stops generating and frees the slot), releases the
lease and records the request as 499, as if the client had gone.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llama_orchestrator.gateway.server import HttpConnection, Request


@dataclass
class Entry:
    id: int
    model: str
    stream: bool
    started: float  # the gateway clock's monotonic time the request arrived
    conn: HttpConnection
    instance: str | None = None  # None while it waits for a lease


class InFlight:
    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self._ids = itertools.count(1)
        # Request -> entry; Request hashes by identity and is held here while in flight
        self._by_req: dict[Request, Entry] = {}

    def __len__(self) -> int:
        return len(self._by_req)

    def add(self, req: Request, conn: HttpConnection, model: str, stream: bool) -> None:
        self._by_req[req] = Entry(next(self._ids), model, stream, req.started, conn)

    def assign(self, req: Request, instance: str) -> None:
        entry = self._by_req.get(req)
        if entry is not None:
            entry.instance = instance

    def discard(self, req: Request) -> None:
        self._by_req.pop(req, None)

    def rows(self) -> list[dict[str, Any]]:
        """The requests in flight, oldest first. One whose client has gone is about to
        be recorded (its connection's loss is handled on the next turn): not shown."""
        for key, entry in list(self._by_req.items()):
            if entry.conn.closed:
                del self._by_req[key]
        now = self._now()
        return [
            {
                "id": e.id,
                "model": e.model,
                "instance": e.instance,
                "stream": e.stream,
                "state": "waiting" if e.instance is None else "running",
                "elapsed_s": round(now - e.started, 3),
            }
            for e in sorted(self._by_req.values(), key=lambda e: e.id)
        ]

    def cancel(self, request_id: int) -> bool:
        """Abort the client connection of request ``request_id``; False when it is not in
        flight (finished already, or never was)."""
        for entry in self._by_req.values():
            if entry.id == request_id and not entry.conn.closed:
                entry.conn.abort()
                return True
        return False
