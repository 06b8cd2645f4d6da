"""Runtime state in SQLite: one row per instance, plus an append-only event log.

The daemon writes the state; the CLI reads it (``ps`` works while the daemon is down)
and writes only ``ps``'s cache of configs that never ran (state/configcache.py). WAL
mode lets readers proceed while a writer writes, and a busy timeout covers writers that
meet and the brief checkpoint moments. The schema is versioned with ``PRAGMA
user_version`` and migrated forward on open, by one process at a time.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from llama_orchestrator.state import sql
from llama_orchestrator.state.pending import PendingWrites
from llama_orchestrator.state.records import InstanceRecord

SCHEMA_VERSION = 4

_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE instances (
        name TEXT PRIMARY KEY,
        desired TEXT NOT NULL DEFAULT 'stopped',
        status TEXT NOT NULL DEFAULT 'stopped',
        health TEXT NOT NULL DEFAULT 'unknown',
        pid INTEGER,
        pid_create_time REAL,
        cmdline TEXT,
        host TEXT,
        port INTEGER,
        backend TEXT,
        device TEXT,
        model TEXT,
        binary TEXT,
        binary_version TEXT,
        start_time REAL,
        ready_time REAL,
        last_health_check REAL,
        restart_count INTEGER NOT NULL DEFAULT 0,
        config_hash TEXT,
        exit_code INTEGER,
        exit_signal INTEGER,
        last_error TEXT,
        updated_at REAL
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        name TEXT NOT NULL,
        kind TEXT NOT NULL,
        old TEXT,
        new TEXT,
        reason TEXT
    );
    CREATE INDEX events_by_name ON events(name, id);
    """,
    # v2: daemon-wide facts, such as the boot time it last saw (reboot detection).
    2: """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # v3: what ps shows of the config of an instance that never ran (its host, port,
    # backend, device and model, or its first problem) as the loader found it, keyed by
    # the file's content: ps -a shows it without importing the loader.
    3: """
    CREATE TABLE config_display (
        name TEXT PRIMARY KEY,
        file_key TEXT NOT NULL,
        fields TEXT NOT NULL
    );
    """,
    # v4: the config each live server was started with (issue 11): its hash, the file's
    # cheap content key then (state/configcache.py) and the config as loaded, so ps
    # flags drift without hashing and describe lists the changed fields.
    4: """
    CREATE TABLE started_config (
        name TEXT PRIMARY KEY,
        config_hash TEXT NOT NULL,
        file_key TEXT,
        config TEXT NOT NULL
    );
    """,
}

INSTANCE_COLUMNS = frozenset(
    {
        "desired",
        "status",
        "health",
        "pid",
        "pid_create_time",
        "cmdline",
        "host",
        "port",
        "backend",
        "device",
        "model",
        "binary",
        "binary_version",
        "start_time",
        "ready_time",
        "last_health_check",
        "restart_count",
        "config_hash",
        "exit_code",
        "exit_signal",
        "last_error",
    }
)


class StateStore:
    def __init__(self, path: Path, *, readonly: bool = False, busy_timeout: float = 5.0) -> None:
        """``busy_timeout``: how many seconds a statement waits for another writer."""
        self.path = path
        self.readonly = readonly
        self._busy_timeout = busy_timeout
        self._pending: PendingWrites | None = None
        self._open(path, readonly, busy_timeout)
        # A writer keeps what it wrote in memory too, so a database deleted under it can
        # be written again in full (recreate_if_lost; issue 10).
        self._mirror: dict[str, dict[str, Any]] = {}
        self._meta: dict[str, str] = {}
        self._started: dict[str, tuple[str, str | None, dict[str, Any]]] = {}
        if not readonly:
            self._mirror = {r.name: r.to_row() for r in self.all()}
            rows = self._db.execute("SELECT key, value FROM meta").fetchall()
            self._meta = {str(k): str(v) for k, v in rows}
            self._started = self.started_configs()
            self._identity = self._file_identity()

    def _file_identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def recreate_if_lost(self) -> bool:
        """When the database file vanished or was replaced, write it again from memory.

        Returns True when it did (the events of before are lost; the caller records that).
        """
        if self.readonly or self._file_identity() == self._identity:
            return False
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        if not self.path.exists():  # a WAL left beside a vanished database is not its own
            for suffix in ("-wal", "-shm"):
                with contextlib.suppress(OSError):
                    os.unlink(f"{self.path}{suffix}")
        self._open(self.path, False, self._busy_timeout)
        self._identity = self._file_identity()
        if self._pending is not None:
            self._pending.reopen()  # its next batch goes to the new file
        rows, self._mirror = self._mirror, {}
        for name, row in rows.items():
            fields = {k: v for k, v in row.items() if k in INSTANCE_COLUMNS}
            self.update(name, **fields)
        for key, value in self._meta.items():
            self.meta_set(key, value)
        for name, (config_hash, file_key, config) in list(self._started.items()):
            self.put_started_config(name, config_hash, file_key, config)
        return True

    def _open(self, path: Path, readonly: bool, busy_timeout: float) -> None:
        if readonly:
            # as_uri() percent-encodes '#', '?' and '%' that would otherwise cut the path.
            uri = f"{path.absolute().as_uri()}?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, timeout=busy_timeout, check_same_thread=False)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), timeout=busy_timeout, check_same_thread=False)
            self._use_wal(busy_timeout)
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        self._db.row_factory = sqlite3.Row
        if not readonly:
            try:
                self._migrate()
            except BaseException:
                self._db.close()
                raise

    @classmethod
    def open_for_reading(cls, path: Path) -> StateStore | None:
        """A read-only view, or None when no state exists yet (never creates the file)."""
        if not path.exists():
            return None
        try:
            store = cls(path, readonly=True)
            store._db.execute("SELECT 1 FROM instances LIMIT 1")
        except sqlite3.Error:
            return None
        return store

    def close(self) -> None:
        if self._pending is not None:
            self._pending.close()
        self._db.close()

    def _use_wal(self, timeout: float) -> None:
        """Switch to WAL, waiting for other openers: this pragma does not wait by itself."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() >= deadline:
                    self._db.close()
                    raise
            time.sleep(0.01)

    def _version(self) -> int:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path}: state schema version {version} is newer than this "
                f"llama-orch supports ({SCHEMA_VERSION}); upgrade llama-orch"
            )
        return version

    def _migrate(self) -> None:
        if self._version() == SCHEMA_VERSION:
            return
        # The daemon and CLIs may open the file at once: the write lock, taken before the
        # version is read again, lets one of them migrate and the others see its result.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for version in range(self._version() + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[version].split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version={version}")
        except BaseException:
            self._db.rollback()
            raise
        self._db.commit()

    # -- instances ---------------------------------------------------------------------

    def update(self, name: str, **fields: Any) -> None:
        unknown = set(fields) - INSTANCE_COLUMNS
        if unknown:
            raise KeyError(f"unknown state columns: {sorted(unknown)}")
        if "cmdline" in fields and isinstance(fields["cmdline"], list):
            fields["cmdline"] = json.dumps(fields["cmdline"])
        fields["updated_at"] = time.time()
        if not self.readonly:
            self._mirror.setdefault(name, {"name": name}).update(fields)
        if self._pending is not None:
            self._pending.update(name, fields)
            return
        with self._db:
            sql.upsert_row(self._db, name, fields)

    def get(self, name: str) -> InstanceRecord | None:
        """The instance's record; None when it has none (it never ran)."""
        found = self._db.execute("SELECT * FROM instances WHERE name=?", (name,)).fetchone()
        row = dict(found) if found else None
        if self._pending is not None:
            row = self._pending.row(name, row)
        return _row(row) if row else None

    def all(self) -> list[InstanceRecord]:
        """Every record, by name."""
        rows = [dict(r) for r in self._db.execute("SELECT * FROM instances ORDER BY name")]
        if self._pending is not None:
            rows = self._pending.rows(rows)
        return [_row(r) for r in rows]

    def record(self, name: str) -> InstanceRecord:
        """The instance's record, or an absent one's defaults (stopped, never ran)."""
        return self.get(name) or InstanceRecord.absent(name)

    def delete(self, name: str, *, events: bool = False) -> None:
        """Forget instance ``name`` (and its events too, with ``events``)."""
        self._mirror.pop(name, None)
        self._started.pop(name, None)
        if self._pending is not None:
            self._pending.delete(name, events=events)
            return
        with self._db:
            sql.delete_instance(self._db, name, events=events)

    # -- meta --------------------------------------------------------------------------

    def meta_get(self, key: str) -> str | None:
        if self._pending is not None and key in self._meta:
            return self._meta[key]  # what this process wrote last, on disk or on its way
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def meta_set(self, key: str, value: str) -> None:
        if not self.readonly:
            self._meta[key] = value
        if self._pending is not None:
            self._pending.queue(partial(sql.upsert_meta, key=key, value=value))
            return
        with self._db:
            sql.upsert_meta(self._db, key, value)

    # -- ps's cache of configs that never ran ---------------------------------------------

    def config_display(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """Every cached entry, as name -> (file key, fields); empty in an older schema."""
        try:
            rows = self._db.execute("SELECT name, file_key, fields FROM config_display")
            found = rows.fetchall()
        except sqlite3.OperationalError:  # a read-only view of a file not yet migrated
            return {}
        out: dict[str, tuple[str, dict[str, Any]]] = {}
        for name, key, text in found:
            try:
                fields = json.loads(text)
            except ValueError:
                continue
            if isinstance(fields, dict):
                out[name] = (key, fields)
        return out

    def put_config_display(
        self, entries: Mapping[str, tuple[str, dict[str, Any]]], keep: Collection[str]
    ) -> None:
        """Store ``entries`` and drop the entries of names not in ``keep``, in one go."""
        with self._db:
            self._db.executemany(
                "INSERT INTO config_display (name, file_key, fields) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET "
                "file_key=excluded.file_key, fields=excluded.fields",
                [(name, key, json.dumps(fields)) for name, (key, fields) in entries.items()],
            )
            names = {r[0] for r in self._db.execute("SELECT name FROM config_display")}
            gone = names - set(keep) - set(entries)
            self._db.executemany("DELETE FROM config_display WHERE name=?", [(n,) for n in gone])

    # -- the config each live server started with (issue 11) -------------------------------

    def put_started_config(
        self, name: str, config_hash: str, file_key: str | None, config: dict[str, Any]
    ) -> None:
        if not self.readonly:
            self._started[name] = (config_hash, file_key, config)
        if self._pending is not None:
            write = partial(sql.upsert_started, name=name, config_hash=config_hash)
            self._pending.queue(partial(write, file_key=file_key, config=config))
            return
        with self._db:
            sql.upsert_started(self._db, name, config_hash, file_key, config)

    def started_configs(
        self, names: Collection[str] | None = None
    ) -> dict[str, tuple[str, str | None, dict[str, Any]]]:
        """name -> (config hash, file key, config) of ``names`` (None: all); empty in an
        older schema."""
        if self._pending is not None:  # the daemon's own record is what holds
            return {n: v for n, v in self._started.items() if names is None or n in names}
        try:
            found = self._db.execute(
                "SELECT name, config_hash, file_key, config FROM started_config"
            ).fetchall()
        except sqlite3.OperationalError:  # a read-only view of a file not yet migrated
            return {}
        out: dict[str, tuple[str, str | None, dict[str, Any]]] = {}
        for name, config_hash, file_key, text in found:
            if names is not None and name not in names:
                continue
            try:
                config = json.loads(text)
            except ValueError:
                continue
            if isinstance(config, dict):
                out[str(name)] = (str(config_hash), file_key, config)
        return out

    # -- events ------------------------------------------------------------------------

    def add_event(
        self,
        name: str,
        kind: str,
        old: str | None = None,
        new: str | None = None,
        reason: str | None = None,
        ts: float | None = None,
    ) -> None:
        event = (time.time() if ts is None else ts, name, kind, old, new, reason)
        if self._pending is not None:
            self._pending.add_event(event)
            return
        with self._db:
            sql.insert_event(self._db, None, event)

    def prune_events(self, name: str, keep: int) -> int:
        """Keep only the newest ``keep`` events of ``name``; returns how many went
        (0 when writes are deferred: they go with the next batch)."""
        if self._pending is not None:
            self._pending.queue(partial(sql.prune_events, name=name, keep=keep))
            return 0
        with self._db:
            return sql.prune_events(self._db, name, keep)

    def events(self, name: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        if name is None:
            q: Iterable[sqlite3.Row] = self._db.execute(
                "SELECT * FROM events ORDER BY id DESC LIMIT ?", (limit,)
            )
        else:
            q = self._db.execute(
                "SELECT * FROM events WHERE name=? ORDER BY id DESC LIMIT ?", (name, limit)
            )
        found = [dict(r) for r in q][::-1]
        if self._pending is not None:
            found = self._pending.events(found, name, limit)
        return found

    # -- deferred writes (the daemon's) -------------------------------------------------

    def defer_writes(self, notify: Callable[[], None]) -> PendingWrites:
        """From now on every write of this store is queued, not executed: reads see it at
        once (rows, events, meta), and the returned queue's owner writes it to disk in
        batches, off the caller's thread (daemon/recorder.py). ``notify`` is called on
        the caller's thread after each queued write."""
        if self._pending is None:
            blank: dict[str, Any] = {c: None for c in INSTANCE_COLUMNS}
            blank.update(desired="stopped", status="stopped", health="unknown", restart_count=0)
            self._pending = PendingWrites(
                self.path, self._busy_timeout, notify, self._db, {**blank, "updated_at": None}
            )
        return self._pending


def _row(row: Mapping[str, Any]) -> InstanceRecord:
    return InstanceRecord.from_row(row)
