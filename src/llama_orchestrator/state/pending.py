"""Writes made and not yet on disk: the daemon's state store defers its writes here
(issue 17), so that no SQLite statement runs on the event loop the gateway shares.

Every write is queued in order as an operation on a connection; one writer task
(daemon/recorder.py) takes what is queued as a batch and runs it in one transaction on
its own connection, in a thread. Meanwhile reads through the store still see every write
at once: its rows, events and meta are laid over what SQLite returns, first the batch
being written, then what is queued behind it. Events get their ids here (the daemon is
the only writer of events), so a queued event has the id it will have on disk.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from llama_orchestrator.state import sql

Op = Callable[[sqlite3.Connection], object]


@dataclass
class _Layer:
    """Writes not yet committed, and what reads see of them."""

    ops: list[Op] = field(default_factory=list)
    # name -> (the row was deleted first, the fields written since)
    rows: dict[str, tuple[bool, dict[str, Any]]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    cleared: dict[str, int] = field(default_factory=dict)  # name -> its events deleted up to

    def under(self, top: _Layer) -> _Layer:
        """This layer with ``top`` written after it, as one."""
        rows = dict(self.rows)
        for name, (reset, fields) in top.rows.items():
            below = rows.get(name, (False, {}))
            rows[name] = (True, dict(fields)) if reset else (below[0], {**below[1], **fields})
        cleared = {**self.cleared, **top.cleared}
        return _Layer([*self.ops, *top.ops], rows, [*self.events, *top.events], cleared)


class PendingWrites:
    def __init__(
        self,
        path: Path,
        busy_timeout: float,
        notify: Callable[[], None],
        reader: sqlite3.Connection,
        blank: dict[str, Any],
    ) -> None:
        self._path = path
        self._busy_timeout = busy_timeout
        self._notify = notify
        self._blank = blank  # a new row's columns, before any write
        self._last_id = sql.last_event_id(reader)
        self._queued = _Layer()
        self._flight = _Layer()  # the batch the writer is writing
        self._writer: sqlite3.Connection | None = None
        self._stale = False
        self.queued_total = 0  # operations queued so far
        self.written_total = 0  # of those, committed

    # -- queueing (on the store's thread) ---------------------------------------------------

    def queue(self, op: Op) -> None:
        self._queued.ops.append(op)
        self.queued_total += 1
        self._notify()

    def update(self, name: str, fields: dict[str, Any]) -> None:
        reset, row = self._queued.rows.get(name, (False, {}))
        self._queued.rows[name] = (reset, {**row, **fields})
        self.queue(partial(sql.upsert_row, name=name, fields=dict(fields)))

    def delete(self, name: str, *, events: bool) -> None:
        self._queued.rows[name] = (True, {})
        if events:
            self._queued.cleared[name] = self._last_id
            for layer in (self._flight, self._queued):
                layer.events = [e for e in layer.events if e["name"] != name]
        self.queue(partial(sql.delete_instance, name=name, events=events))

    def add_event(self, event: sql.EventRow) -> None:
        self._last_id += 1
        ts, name, kind, old, new, reason = event
        row = {"id": self._last_id, "ts": ts, "name": name, "kind": kind, "old": old}
        self._queued.events.append({**row, "new": new, "reason": reason})
        self.queue(partial(sql.insert_event, event_id=self._last_id, event=event))

    # -- reads: what SQLite returned, with the writes on their way laid over it -------------

    def row(self, name: str, row: dict[str, Any] | None) -> dict[str, Any] | None:
        for layer in (self._flight, self._queued):
            change = layer.rows.get(name)
            if change is None:
                continue
            reset, fields = change
            if reset:
                row = None
            if fields:
                row = {**(row or {**self._blank, "name": name}), **fields}
        return row

    def rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        by_name = {r["name"]: r for r in rows}
        names = set(by_name) | set(self._flight.rows) | set(self._queued.rows)
        found = (self.row(n, by_name.get(n)) for n in sorted(names))
        return [r for r in found if r is not None]

    def events(
        self, found: list[dict[str, Any]], name: str | None, limit: int
    ) -> list[dict[str, Any]]:
        for layer in (self._flight, self._queued):
            if layer.cleared:  # deleted with their instance, on the way to the disk
                found = [e for e in found if e["id"] > layer.cleared.get(e["name"], 0)]
        # A batch just committed may be in both: SQLite's copy is the one kept.
        seen = {e["id"] for e in found}
        extra = [
            dict(e)
            for layer in (self._flight, self._queued)
            for e in layer.events
            if (name is None or e["name"] == name) and e["id"] not in seen
        ]
        return [*found, *extra][-limit:]

    # -- the writer's side ------------------------------------------------------------------

    @property
    def waiting(self) -> bool:
        return bool(self._queued.ops)

    def take(self) -> list[Op]:
        """The next batch: everything queued (call ``written`` or ``failed`` after)."""
        self._flight, self._queued = self._queued, _Layer()
        return self._flight.ops

    def write(self, ops: list[Op]) -> None:
        """Run a batch in one transaction (in the writer's thread)."""
        db = self._connection()
        with db:
            for op in ops:
                op(db)

    def written(self) -> None:
        self.written_total += len(self._flight.ops)
        self._flight = _Layer()

    def failed(self) -> None:
        """The batch was not written: it goes first into the next one."""
        self._queued, self._flight = self._flight.under(self._queued), _Layer()

    def reopen(self) -> None:
        """The database file was replaced: the next batch opens it again."""
        self._stale = True

    def _connection(self) -> sqlite3.Connection:
        if self._stale and self._writer is not None:
            self._writer.close()
            self._writer = None
        self._stale = False
        if self._writer is None:
            db = sqlite3.connect(
                str(self._path), timeout=self._busy_timeout, check_same_thread=False
            )
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(f"PRAGMA busy_timeout={int(self._busy_timeout * 1000)}")
            self._writer = db
        return self._writer

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
