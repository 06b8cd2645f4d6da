"""The daemon's state store writes in batches, off the event loop (issue 17): its own reads
see every write at once, another reader (the CLI) once the writer task has committed it,
and nothing queued is lost on shutdown or when a batch fails. Real SQLite throughout."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from llama_orchestrator.daemon.events import EventBus, EventKind
from llama_orchestrator.daemon.recorder import Recorder, StoreWriter
from llama_orchestrator.state.db import StateStore


def on_disk(path: Path, name: str) -> dict[str, Any] | None:
    """The row as another process (the CLI) reads it."""
    reader = StateStore.open_for_reading(path)
    assert reader is not None
    try:
        row = reader.get(name)
    finally:
        reader.close()
    return None if row is None else row.to_row()


def events_on_disk(path: Path, name: str) -> list[dict[str, Any]]:
    reader = StateStore.open_for_reading(path)
    assert reader is not None
    try:
        return reader.events(name, 100)
    finally:
        reader.close()


def test_writes_are_seen_at_once_and_reach_the_disk_in_one_batch(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"

    async def main() -> None:
        store = StateStore(path)
        writer = StoreWriter(store)
        writer.start()
        bus = EventBus()
        bus.add_sink(Recorder(store))
        # what one actor handler does, without awaiting in between
        store.update("alpha", status="starting", desired="running", pid=4242, cmdline=["x", "y"])
        bus.emit("alpha", EventKind.STATE, "stopped", "starting", "up requested")
        store.update("alpha", health="unknown", last_error=None)
        store.meta_set("boot_time", "12.5")
        # the daemon's reads see it all; nothing is on disk yet (the writer has not run)
        row = store.get("alpha")
        assert row is not None and row.status == "starting" and row.pid == 4242
        assert row.cmdline == ("x", "y") and row.restart_count == 0
        assert [r.name for r in store.all()] == ["alpha"]
        assert store.meta_get("boot_time") == "12.5"
        queued = store.events("alpha")
        assert [(e["kind"], e["new"]) for e in queued] == [("state", "starting")]
        assert on_disk(path, "alpha") is None
        await writer.flushed()
        assert writer.batches == 1  # one transaction for the handler's four writes
        disk = on_disk(path, "alpha")
        assert disk is not None and disk["status"] == "starting" and disk["pid"] == 4242
        assert events_on_disk(path, "alpha") == queued  # the same ids as announced
        await writer.close()
        store.close()

    asyncio.run(main())


def test_a_delete_then_a_new_row_and_events_keep_their_order(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    seed = StateStore(path)
    seed.update("alpha", status="fatal", restart_count=3, last_error="old")
    seed.add_event("alpha", "state", "running", "fatal", "gave up")
    seed.close()

    async def main() -> None:
        store = StateStore(path)
        writer = StoreWriter(store)
        writer.start()
        store.delete("alpha", events=True)
        assert store.get("alpha") is None and store.events("alpha") == []
        store.update("alpha", desired="running")  # recreated: the old fields are gone
        row = store.get("alpha")
        assert row is not None and row.restart_count == 0 and row.last_error is None
        store.add_event("alpha", "config", reason="added")
        await writer.flushed()
        disk = on_disk(path, "alpha")
        assert disk is not None and disk["desired"] == "running" and disk["last_error"] is None
        assert [e["kind"] for e in events_on_disk(path, "alpha")] == ["config"]
        await writer.close()
        store.close()

    asyncio.run(main())


def test_shutdown_writes_what_is_still_queued(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"

    async def main() -> None:
        store = StateStore(path)
        writer = StoreWriter(store)
        writer.start()
        store.update("alpha", status="running", pid=7)
        store.add_event("alpha", "state", "starting", "running", "ready")
        await writer.close()  # at once: the writer may not have run yet
        store.close()

    asyncio.run(main())
    disk = on_disk(path, "alpha")
    assert disk is not None and disk["status"] == "running" and disk["pid"] == 7
    assert [e["new"] for e in events_on_disk(path, "alpha")] == ["running"]


def test_a_failed_batch_is_kept_and_written_once_the_disk_lets_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.sqlite"
    StateStore(path).close()

    async def main() -> None:
        store = StateStore(path, busy_timeout=0.05)
        writer = StoreWriter(store)
        writer.start()
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")  # another writer holds the file
        store.update("alpha", status="running")
        flushed = asyncio.ensure_future(writer.flushed())
        for _ in range(500):  # until the writer has met the lock and said so
            if any("writing the state database" in r.message for r in caplog.records):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the writer never reported the locked database")
        assert not flushed.done()
        store.update("alpha", health="healthy")  # queued behind the failed batch
        row = store.get("alpha")
        assert row is not None and (row.status, row.health) == ("running", "healthy")
        other.execute("COMMIT")
        other.close()
        await asyncio.wait_for(flushed, 10)
        await writer.flushed()
        disk = on_disk(path, "alpha")
        assert disk is not None and (disk["status"], disk["health"]) == ("running", "healthy")
        await writer.close()
        store.close()

    with caplog.at_level(logging.ERROR, logger="llama_orchestrator.recorder"):
        asyncio.run(main())
