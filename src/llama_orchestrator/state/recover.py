"""The daemon's state database at start: a file that is not one is moved aside (issue 19).

A garbage ``state.sqlite`` used to stop the daemon at start, silently: the CLI waited
20 s for a daemon that had died, and the running servers were orphaned. Everything the
database holds can be found again or is history: running servers carry this home's
marker and are re-adopted from it (daemon/supervisor.py ``_find_lost_servers``), and
configs live in their files. So the daemon keeps the broken file as a dated copy beside
it (with its WAL), starts with a fresh database, and says so in its log, as an event and
in ``daemon start``'s output. A database that is merely locked is not touched.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

from llama_orchestrator.state.db import StateStore

NOTICE_KEY = "state_recovered"  # meta: {"pid": the daemon that moved it, "message": ...}


def _broken(path: Path, error: sqlite3.Error) -> bool:
    """Not a database we can use, as opposed to one busy or briefly unreachable."""
    if path.is_dir():
        return True
    if isinstance(error, sqlite3.OperationalError):  # locked, busy, no permission
        return False
    return isinstance(error, sqlite3.DatabaseError)


def _move_aside(path: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    kept = path.with_name(f"{path.name}.broken-{stamp}")
    n = 1
    while kept.exists():
        n += 1
        kept = path.with_name(f"{path.name}.broken-{stamp}-{n}")
    os.replace(path, kept)
    for suffix in ("-wal", "-shm"):  # its journal is its own: kept with it, not replayed
        side = Path(f"{path}{suffix}")
        if side.exists():
            os.replace(side, Path(f"{kept}{suffix}"))
    return kept


def open_state(path: Path) -> tuple[StateStore, str | None]:
    """The daemon's store, and what was done when ``path`` was not a database (None:
    nothing). Errors other than a broken file propagate, as before."""
    try:
        return StateStore(path), None
    except sqlite3.Error as e:
        if not _broken(path, e):
            raise
        reason = str(e)
    kept = _move_aside(path)
    store = StateStore(path)
    message = (
        f"the state database {path} was not usable ({reason}); it was moved aside to "
        f"{kept} and the daemon started with a fresh one, re-adopting running servers by "
        "their home marker (instance history before now is in the copy)"
    )
    store.meta_set(NOTICE_KEY, json.dumps({"pid": os.getpid(), "message": message}))
    return store, message


def recovery_notice(path: Path, pid: int | None) -> str | None:
    """What the daemon ``pid`` said when it had to start a fresh database, if it did."""
    store = StateStore.open_for_reading(path)
    if store is None:
        return None
    try:
        raw = store.meta_get(NOTICE_KEY)
    except sqlite3.Error:
        return None
    finally:
        store.close()
    try:
        notice = json.loads(raw or "")
    except ValueError:
        return None
    if not isinstance(notice, dict) or notice.get("pid") != pid:
        return None
    message = notice.get("message")
    return message if isinstance(message, str) else None
