"""``ps``'s cache of what it shows of the configs of instances that never ran.

An instance without a state row shows the host, port, backend, device and model of its
config (or, for an invalid one, the first problem), and every config enters through the
loader (pydantic), whose import costs more than the rest of ``ps -a`` together. So what
the loader gave is kept in the state store's ``config_display`` table, keyed by the
config file's content, and ``ps -a`` shows a config whose key matches without importing
the loader. Any other config goes through the loader as before, and its entry is stored
again.

The key is the file's size and CRC-32 (zlib: no hashlib to import), not its mtime: a
rewrite of the same size within one tick of the file system's clock leaves the mtime as
it was, and the cache would then show the old config for good.

Writing is best effort: the state folder may be missing (it is created), read-only or
not a folder at all, and the daemon or another CLI may be writing (WAL, a short busy
timeout); a write that fails leaves ``ps`` as correct as before, only not faster.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from llama_orchestrator.home import Home

# Part of every key: a change to what an entry holds invalidates the entries stored before.
FORMAT = "1"
# How long a write waits for another writer (the daemon's are a few milliseconds).
BUSY_TIMEOUT_S = 0.5


def content_key(path: Path) -> str | None:
    """The cache key of the config file at ``path``; None when it cannot be read."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return key_of(data)


def key_of(data: bytes) -> str:
    """The cache key of a config file's bytes (the daemon's Configs reads them once)."""
    import zlib  # imported here: plain ``ps`` reads no config

    return f"{FORMAT}:{len(data)}:{zlib.crc32(data):08x}"


def remember(
    home: Home, entries: Mapping[str, tuple[str, dict[str, Any]]], keep: Collection[str]
) -> bool:
    """Store ``entries`` (name -> (key, fields)); drop those of names not in ``keep``.

    True when they were stored; False (and nothing raised) when the state store could
    not be written.
    """
    import sqlite3

    from llama_orchestrator.state.db import StateStore

    try:
        # the folder ``Home.ensure`` would make: it also holds command lines, user-only
        home.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        store = StateStore(home.db_path, busy_timeout=BUSY_TIMEOUT_S)
    except (OSError, sqlite3.Error, RuntimeError):  # RuntimeError: a newer schema
        return False
    try:
        store.put_config_display(entries, keep)
    except sqlite3.Error:
        return False
    finally:
        store.close()
    return True
