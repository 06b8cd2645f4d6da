"""What ``ps``, the dashboard and other readers show: one row per instance.

Built from the state records (so it works while the daemon is down) plus the configs of
instances that never ran. Reads only (but for ps's config cache); cheap imports, since
``ps`` must start fast: the config loader (pydantic) is imported only when a
never-started instance is shown whose config is not in the cache (state/configcache.py).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from llama_orchestrator.engine.states import State
from llama_orchestrator.home import Home
from llama_orchestrator.state import configcache
from llama_orchestrator.state import memory as recorded_memory
from llama_orchestrator.state.drift import Started, config_changed
from llama_orchestrator.state.records import InstanceRecord

Entries = dict[str, tuple[str, dict[str, Any]]]
# What a never-started instance's row takes from its config (or its cache entry).
_FIELDS = frozenset({"host", "port", "backend", "device", "model", "last_error"})


def _loaded_fields(home: Home, name: str) -> dict[str, Any] | None:
    """The display fields of ``name``'s config, through the loader like every config.

    An invalid config gives only ``last_error``, naming its first problem. None when the
    config vanished since the folder was listed.
    """
    from llama_orchestrator.config.loader import ConfigError, UnknownInstance, load_instance
    from llama_orchestrator.engine.command import device_label

    try:
        loaded = load_instance(home, name)
    except UnknownInstance:
        return None
    except ConfigError as e:
        return {"last_error": f"invalid config: {e.problems[0]}" if e.problems else str(e)}
    c = loaded.config
    if loaded.remote is not None:  # as its record will say once it is up (preflight)
        r = loaded.remote
        return {
            "host": r.host,
            "port": r.port,
            "backend": "remote",
            "device": "-",
            "model": str(loaded.model_path),
        }
    return {
        "host": c.server.host,
        "port": c.server.port,
        "backend": c.gpu.backend,
        "device": device_label(c.gpu.backend, c.gpu.device_id),
        "model": str(loaded.model_path),
    }


def _never_started(home: Home, name: str, cached: Entries, fresh: Entries) -> InstanceRecord | None:
    """The record of an instance without a state row, its display fields from its config.

    From ``cached`` when the config file's key matches, else from the loader (the new
    entry goes into ``fresh``, unless the file changed while it was loaded). None when
    the config vanished since the folder was listed.
    """
    absent = InstanceRecord.absent(name)
    key = configcache.content_key(home.config_path(name))
    hit = cached.get(name)
    if key is not None and hit is not None and hit[0] == key:
        return replace(absent, **{k: v for k, v in hit[1].items() if k in _FIELDS})
    fields = _loaded_fields(home, name)
    if fields is None:
        return None
    if key is not None and configcache.content_key(home.config_path(name)) == key:
        fresh[name] = (key, fields)
    return replace(absent, **fields)


def ps_row(
    record: InstanceRecord,
    *,
    now: float,
    defined: bool,
    changed: bool,
    memory: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One instance's ps row (``ps --json``'s object) from its record; ``memory``: its
    run's estimate and measurements per device (state/memory.py; issue 18)."""
    model = record.model or ""
    return {
        "name": record.name,
        "pid": record.pid,
        "port": record.port,
        "backend": record.backend,
        "device": record.device,
        "model": model.replace("\\", "/").rsplit("/", 1)[-1].removesuffix(".gguf"),
        "status": record.status,
        "health": record.health,
        "uptime_s": record.uptime_s(now),
        "restarts": record.restart_count,
        "desired": record.desired,
        "defined": defined,
        # a record whose config folder was removed: it may still run (issue 10)
        "config_removed": not defined,
        # a live server started with another config than the file holds now
        "config_changed": changed,
        "last_error": record.last_error,
        "memory": memory or {},
    }


def instance_rows(home: Home, *, stopped: bool = True) -> list[dict[str, Any]]:
    """One row per instance (defined or recorded), sorted by name.

    ``stopped=False`` leaves out stopped instances, and so never reads the configs of
    instances that never ran (plain ``ps`` hides them anyway).
    """
    from llama_orchestrator.state.db import StateStore

    store = StateStore.open_for_reading(home.db_path)
    records: dict[str, InstanceRecord] = {}
    memory: dict[str, dict[str, Any] | None] = {}
    cached: Entries = {}
    started: Started = {}
    if store is not None:
        try:
            records = {r.name: r for r in store.all()}
            memory = {n: recorded_memory.recorded(store, n, r.pid) for n, r in records.items()}
            started = store.started_configs()
            if stopped:
                cached = store.config_display()
        finally:
            store.close()
    now = time.time()
    rows = []
    defined = set(home.instance_names())
    fresh: Entries = {}
    for name in sorted(defined | set(records)):
        record = records.get(name)
        shown = record or (_never_started(home, name, cached, fresh) if stopped else None)
        if shown is None or (not stopped and shown.status == State.STOPPED):
            continue
        changed = name in defined and config_changed(home.config_path(name), record, started)
        mem = memory.get(name) if record is not None else None
        rows.append(ps_row(shown, now=now, defined=name in defined, changed=changed, memory=mem))
    if fresh:
        configcache.remember(home, fresh, keep=defined - set(records))
    return rows
