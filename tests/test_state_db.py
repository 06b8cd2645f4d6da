"""state/db.py: the SQLite state store (WAL, versioned schema, one writer, free readers)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from llama_orchestrator.state.db import INSTANCE_COLUMNS, SCHEMA_VERSION, StateStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    s = StateStore(tmp_path / "state" / "state.sqlite")
    yield s
    s.close()


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(str(path))


def test_creates_parent_and_uses_wal(store: StateStore) -> None:
    assert store.path.is_file()
    con = raw(store.path)
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        con.close()


def test_reopen_keeps_data_and_version(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    s = StateStore(path)
    s.update("a", status="running", restart_count=2)
    s.close()
    s = StateStore(path)  # migrating again must be a no-op
    try:
        row = s.get("a")
        assert row is not None
        assert (row.status, row.restart_count) == ("running", 2)
    finally:
        s.close()


def test_state_columns_cover_the_plan(store: StateStore) -> None:
    plan = {"pid", "start_time", "status", "health", "last_health_check", "restart_count"}
    plan |= {"config_hash", "desired", "port", "binary", "exit_code", "exit_signal", "last_error"}
    assert plan <= INSTANCE_COLUMNS


def test_update_get_round_trip(store: StateStore) -> None:
    assert store.get("chat") is None
    cmd = ["/bin/llama-server", "-m", "/m/a b.gguf", "-a", 'quote " and ; semicolon']
    store.update("chat", pid=1234, pid_create_time=1.5, cmdline=cmd, port=8001, status="starting")
    row = store.get("chat")
    assert row is not None
    assert row.name == "chat"
    assert row.cmdline == tuple(cmd)
    assert (row.pid, row.pid_create_time, row.port) == (1234, 1.5, 8001)
    # defaults of the fields never written
    assert (row.desired, row.health, row.restart_count) == ("stopped", "unknown", 0)
    assert row.updated_at is not None

    store.update("chat", status="running", pid=None)  # partial update keeps the rest
    row = store.get("chat")
    assert row is not None
    assert (row.status, row.pid, row.port, row.cmdline) == ("running", None, 8001, tuple(cmd))


def test_all_sorted_by_name(store: StateStore) -> None:
    for name in ("zeta", "alpha", "mid"):
        store.update(name, status="stopped")
    assert [r.name for r in store.all()] == ["alpha", "mid", "zeta"]
    store.delete("mid")
    assert [r.name for r in store.all()] == ["alpha", "zeta"]


def test_unknown_column_raises_keyerror(store: StateStore) -> None:
    with pytest.raises(KeyError, match="bogus"):
        store.update("chat", bogus=1)
    # a column name is never spliced into SQL unchecked
    with pytest.raises(KeyError):
        store.update("chat", **{"status=1; DROP TABLE instances; --": 1})
    assert store.get("chat") is None
    store.update("chat", status="stopped")  # the table is still there


def test_events_order_limit_and_filter(store: StateStore) -> None:
    for i in range(10):
        store.add_event("a", "state", f"s{i}", f"s{i + 1}", f"r{i}", ts=100.0 + i)
        store.add_event("b", "health", None, "ok")
    last3 = store.events("a", limit=3)
    assert [e["reason"] for e in last3] == ["r7", "r8", "r9"]  # oldest first, newest kept
    assert [e["ts"] for e in last3] == [107.0, 108.0, 109.0]
    assert all(e["name"] == "a" for e in store.events("a"))
    assert len(store.events("a")) == 10
    mixed = store.events(None, limit=4)
    assert [e["name"] for e in mixed] == ["a", "b", "a", "b"]
    assert [e["id"] for e in mixed] == sorted(e["id"] for e in mixed)
    assert store.events("nobody") == []


def test_open_for_reading_missing_never_creates(tmp_path: Path) -> None:
    path = tmp_path / "state" / "state.sqlite"
    assert StateStore.open_for_reading(path) is None
    assert not path.exists()
    assert not path.parent.exists()
    assert list(tmp_path.iterdir()) == []


def test_open_for_reading_empty_file_is_none(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    path.write_bytes(b"")
    assert StateStore.open_for_reading(path) is None


def test_reader_is_read_only(store: StateStore) -> None:
    store.update("chat", status="running")
    reader = StateStore.open_for_reading(store.path)
    assert reader is not None
    try:
        assert reader.get("chat") is not None
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.update("chat", status="stopped")
    finally:
        reader.close()


def test_newer_schema_refused_with_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    con = raw(path)
    con.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    con.commit()
    con.close()
    with pytest.raises(RuntimeError, match=r"newer than this llama-orch supports") as e:
        StateStore(path)
    assert str(path) in str(e.value)
    assert f"version {SCHEMA_VERSION + 1}" in str(e.value)


def test_reader_not_blocked_by_open_write_transaction(store: StateStore) -> None:
    """WAL: a reader proceeds while the writer holds the write lock, and sees commits."""
    store.update("chat", restart_count=0)
    reader = StateStore.open_for_reading(store.path)
    assert reader is not None
    holding = threading.Event()
    release = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        con = sqlite3.connect(str(store.path), timeout=0)
        try:
            con.execute("BEGIN EXCLUSIVE")  # in rollback-journal mode this blocks readers
            con.execute("UPDATE instances SET restart_count=99 WHERE name='chat'")
            holding.set()
            release.wait(30)
            con.commit()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)
            holding.set()
        finally:
            con.close()

    t = threading.Thread(target=writer)
    t.start()
    try:
        assert holding.wait(30)
        assert errors == []
        row = reader.get("chat")  # would raise "database is locked" without WAL
        assert row is not None and row.restart_count == 0  # uncommitted: invisible
    finally:
        release.set()
        t.join(30)
    assert errors == []
    row = reader.get("chat")
    assert row is not None and row.restart_count == 99
    reader.close()


def test_concurrent_reads_while_writer_thread_writes(store: StateStore) -> None:
    store.update("chat", restart_count=0)
    reader = StateStore.open_for_reading(store.path)
    assert reader is not None
    n = 300
    done = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for i in range(1, n + 1):
                store.update("chat", restart_count=i)
                store.add_event("chat", "tick", None, str(i))
        except BaseException as e:
            errors.append(e)
        finally:
            done.set()

    t = threading.Thread(target=writer)
    t.start()
    seen: list[int] = []
    try:
        while not done.is_set():
            row = reader.get("chat")
            assert row is not None
            seen.append(row.restart_count)
            reader.events("chat", limit=5)
    finally:
        t.join(30)
    assert errors == []
    assert seen == sorted(seen), "a reader must never see the count go backwards"
    final = reader.get("chat")
    assert final is not None and final.restart_count == n
    assert len(reader.events("chat", limit=1000)) == n
    reader.close()


@pytest.mark.parametrize("folder", ["my#home", "my?home", "my%41home"])
def test_open_for_reading_path_with_uri_characters(tmp_path: Path, folder: str) -> None:
    path = tmp_path / folder / "state" / "state.sqlite"
    writer = StateStore(path)
    writer.update("chat", status="running")
    before = sorted(p.name for p in tmp_path.iterdir())
    reader = StateStore.open_for_reading(path)
    try:
        assert sorted(p.name for p in tmp_path.iterdir()) == before, "created a stray file"
        assert reader is not None
        row = reader.get("chat")
        assert row is not None and row.status == "running"
    finally:
        if reader is not None:
            reader.close()
        writer.close()
