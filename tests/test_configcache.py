"""ps's cache of configs that never ran (state/configcache.py): same rows as the loader
gives, a stale entry never shown, and a state folder that is missing, unwritable or busy
never breaks ps."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, write_config

from llama_orchestrator.home import Home
from llama_orchestrator.state import configcache
from llama_orchestrator.state.db import SCHEMA_VERSION, StateStore
from llama_orchestrator.views import rows as views
from llama_orchestrator.views.rows import instance_rows


def cached(home: Home) -> dict[str, tuple[str, dict[str, Any]]]:
    store = StateStore.open_for_reading(home.db_path)
    assert store is not None
    try:
        return store.config_display()
    finally:
        store.close()


def count_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names ``instance_rows`` sends through the loader from now on."""
    loads: list[str] = []
    real = views._loaded_fields

    def loaded(home: Home, name: str) -> dict[str, Any] | None:
        loads.append(name)
        return real(home, name)

    monkeypatch.setattr(views, "_loaded_fields", loaded)
    return loads


def test_rows_from_the_cache_equal_the_loaders(
    home: Home, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(home, "gpu", tiny_model, free_port(), gpu={"backend": "vulkan", "device_id": 1})
    write_config(home, "typo", tiny_model, free_port(), server={"prot": 1})
    loads = count_loads(monkeypatch)
    assert not home.state_dir.exists()
    cold = instance_rows(home)  # through the loader; creates the state folder and the cache
    assert sorted(loads) == ["gpu", "typo"]
    assert home.state_dir.stat().st_mode & 0o777 == 0o700
    assert set(cached(home)) == {"gpu", "typo"}
    assert cached(home)["typo"][1]["last_error"].startswith("invalid config: ")
    loads.clear()
    warm = instance_rows(home)
    assert loads == []
    assert warm == cold
    assert instance_rows(home, stopped=False) == []


def test_a_changed_config_is_loaded_again_even_with_the_same_size_and_mtime(
    home: Home, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(home, "alpha", tiny_model, 8001)
    st = path.stat()
    instance_rows(home)
    loads = count_loads(monkeypatch)
    path.write_text(path.read_text().replace("8001", "8002"))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # as within one clock tick
    assert path.stat().st_size == st.st_size
    (row,) = instance_rows(home)
    assert loads == ["alpha"] and row["port"] == 8002
    loads.clear()
    assert instance_rows(home)[0]["port"] == 8002 and loads == []


def test_an_entry_is_not_stored_when_the_config_changes_while_it_loads(
    home: Home, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(home, "alpha", tiny_model, 8001)
    real = views._loaded_fields

    def loaded(home: Home, name: str) -> dict[str, Any] | None:
        fields = real(home, name)
        path.write_text(path.read_text().replace("8001", "8003"))  # after the loader read it
        return fields

    monkeypatch.setattr(views, "_loaded_fields", loaded)
    assert instance_rows(home)[0]["port"] == 8001  # what the loader read
    monkeypatch.setattr(views, "_loaded_fields", real)
    assert "alpha" not in (cached(home) if home.db_path.exists() else {})
    assert instance_rows(home)[0]["port"] == 8003


def test_entries_of_started_or_removed_instances_are_dropped(home: Home, tiny_model: Path) -> None:
    write_config(home, "alpha", tiny_model, free_port())
    write_config(home, "beta", tiny_model, free_port())
    instance_rows(home)
    assert set(cached(home)) == {"alpha", "beta"}
    store = StateStore(home.db_path)
    store.update("alpha", status="stopped")  # it ran: its state row is shown from now on
    store.close()
    write_config(home, "gamma", tiny_model, free_port())  # a new entry: the store is written
    instance_rows(home)
    assert set(cached(home)) == {"beta", "gamma"}


@pytest.mark.parametrize("broken", ["state-is-a-file", "db-is-a-folder", "newer-schema"])
def test_ps_works_when_the_state_store_cannot_be_written(
    home: Home, tiny_model: Path, broken: str
) -> None:
    write_config(home, "alpha", tiny_model, 8001)
    if broken == "state-is-a-file":
        home.state_dir.write_text("")
    elif broken == "db-is-a-folder":
        home.db_path.mkdir(parents=True)
    else:
        home.state_dir.mkdir()
        con = sqlite3.connect(str(home.db_path))
        con.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
        con.close()
    for _ in range(2):
        (row,) = instance_rows(home)
        assert (row["name"], row["port"], row["status"]) == ("alpha", 8001, "stopped")
    assert configcache.remember(home, {"alpha": ("k", {"port": 1})}, keep=["alpha"]) is False


def test_a_store_of_the_previous_schema_is_read_and_then_migrated(
    home: Home, tiny_model: Path
) -> None:
    from llama_orchestrator.state.db import _MIGRATIONS

    home.state_dir.mkdir(parents=True)
    con = sqlite3.connect(str(home.db_path))
    for version in (1, 2):
        con.executescript(_MIGRATIONS[version])
    con.execute("PRAGMA user_version=2")
    con.commit()
    con.close()
    write_config(home, "alpha", tiny_model, 8001)
    reader = StateStore.open_for_reading(home.db_path)
    assert reader is not None
    assert reader.config_display() == {}  # no table yet: an empty cache
    reader.close()
    assert instance_rows(home)[0]["port"] == 8001  # the write migrates it
    assert set(cached(home)) == {"alpha"}


def test_concurrent_writers_and_the_daemon_all_get_through(home: Home, tiny_model: Path) -> None:
    """Several ps -a and the daemon write the state store at once (WAL, busy timeout)."""
    names = [f"inst-{i}" for i in range(6)]
    for i, name in enumerate(names):
        write_config(home, name, tiny_model, 9000 + i)
    daemon = StateStore(home.db_path)
    stop = threading.Event()
    errors: list[BaseException] = []

    def daemon_writes() -> None:
        n = 0
        try:
            while not stop.is_set():
                n += 1
                daemon.update("running-one", status="running", restart_count=n)
                daemon.add_event("running-one", "tick", None, str(n))
                stop.wait(0.001)  # a busy daemon, yet one that does more than write
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    results: list[bool] = []

    def cli_writes(name: str) -> None:
        key = configcache.content_key(home.config_path(name))
        assert key is not None
        for _ in range(20):
            results.append(configcache.remember(home, {name: (key, {"port": 1})}, keep=names))

    writer = threading.Thread(target=daemon_writes)
    writer.start()
    clis = [threading.Thread(target=cli_writes, args=(n,)) for n in names]
    try:
        for t in clis:
            t.start()
        for t in clis:
            t.join(60)
    finally:
        stop.set()
        writer.join(60)
        daemon.close()
    assert errors == []
    assert len(results) == 20 * len(names) and all(results)
    assert set(cached(home)) == set(names)


def test_concurrent_first_opens_migrate_once(tmp_path: Path) -> None:
    """The daemon and CLIs may create and migrate the state file at the same moment."""
    path = tmp_path / "state" / "state.sqlite"
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            barrier.wait(30)
            StateStore(path).close()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=open_it) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    con = sqlite3.connect(str(path))
    try:
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"instances", "events", "meta", "config_display"} <= tables
    finally:
        con.close()


def test_a_garbled_entry_is_ignored(home: Home, tiny_model: Path) -> None:
    write_config(home, "alpha", tiny_model, 8001)
    instance_rows(home)
    con = sqlite3.connect(str(home.db_path))
    con.execute("UPDATE config_display SET fields=? WHERE name='alpha'", ("{not json",))
    con.commit()
    con.close()
    assert cached(home) == {}
    assert instance_rows(home)[0]["port"] == 8001  # through the loader, and stored again
    assert cached(home)["alpha"][1]["port"] == 8001
