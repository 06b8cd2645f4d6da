"""The state store's writes, as statements on a connection the caller holds in a
transaction: state/db.py runs each in its own, the daemon's writer many in one batch
(state/pending.py)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

# (ts, name, kind, old, new, reason)
EventRow = tuple[float, str, str, str | None, str | None, str | None]


def upsert_row(db: sqlite3.Connection, name: str, fields: dict[str, Any]) -> None:
    cols = ", ".join(fields)
    marks = ", ".join("?" for _ in fields)
    sets = ", ".join(f"{c}=excluded.{c}" for c in fields)
    db.execute(
        f"INSERT INTO instances (name, {cols}) VALUES (?, {marks}) "
        f"ON CONFLICT(name) DO UPDATE SET {sets}",
        (name, *fields.values()),
    )


def delete_instance(db: sqlite3.Connection, name: str, *, events: bool) -> None:
    db.execute("DELETE FROM instances WHERE name=?", (name,))
    db.execute("DELETE FROM started_config WHERE name=?", (name,))
    if events:
        db.execute("DELETE FROM events WHERE name=?", (name,))


def insert_event(db: sqlite3.Connection, event_id: int | None, event: EventRow) -> None:
    """``event_id`` None: the next one SQLite picks."""
    db.execute(
        "INSERT INTO events (id, ts, name, kind, old, new, reason) VALUES (?,?,?,?,?,?,?)",
        (event_id, *event),
    )


def prune_events(db: sqlite3.Connection, name: str, keep: int) -> int:
    cur = db.execute(
        "DELETE FROM events WHERE name=? AND id <= "
        "(SELECT id FROM events WHERE name=? ORDER BY id DESC LIMIT 1 OFFSET ?)",
        (name, name, keep),
    )
    return cur.rowcount


def last_event_id(db: sqlite3.Connection) -> int:
    """The highest event id ever given (AUTOINCREMENT never gives one twice)."""
    top = db.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]
    seq = db.execute("SELECT seq FROM sqlite_sequence WHERE name='events'").fetchone()
    return max(int(top), int(seq[0]) if seq else 0)


def upsert_meta(db: sqlite3.Connection, key: str, value: str) -> None:
    db.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
        (key, value),
    )


def upsert_started(
    db: sqlite3.Connection,
    name: str,
    config_hash: str,
    file_key: str | None,
    config: dict[str, Any],
) -> None:
    db.execute(
        "INSERT INTO started_config (name, config_hash, file_key, config) "
        "VALUES (?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
        "config_hash=excluded.config_hash, file_key=excluded.file_key, "
        "config=excluded.config",
        (name, config_hash, file_key, json.dumps(config)),
    )
