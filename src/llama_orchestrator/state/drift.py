"""Drift (issue 11): a live server whose config on disk is no longer the one it started with.

The record holds the hash of the config a server was started with (``config_hash``,
the loader's ``raw_hash``), and the ``started_config`` table the config itself and the
file's cheap content key then (state/configcache.py: size and CRC-32). ``ps`` compares
content keys, so it neither hashes nor imports the loader; ``describe`` lists the fields
that differ. Cheap imports only: ``ps``'s fast path uses this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llama_orchestrator.state import configcache
from llama_orchestrator.state.records import InstanceRecord

Started = Mapping[str, tuple[str, str | None, dict[str, Any]]]
# The state store's meta key where the daemon lists the configs that are broken now.
PROBLEMS_KEY = "config_problems"
UNSET = "(unset)"  # a field that one side of a difference does not have


def config_hash(path: Path) -> str | None:
    """The loader's ``raw_hash`` of the file at ``path`` (None: it cannot be read).

    The loader hashes the text with its line ends made ``\\n``; on the bytes that is the
    same digest for every UTF-8 file (``\\r`` and ``\\n`` never occur inside a multi-byte
    character), and a file that is not UTF-8 gets a digest no valid config has.
    """
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    return hash_of(raw)


def hash_of(raw: bytes) -> str:
    """:func:`config_hash` of a config file's bytes (the daemon's Configs reads them once)."""
    import hashlib  # imported here: ps reaches it only without a content key

    raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return hashlib.sha256(raw).hexdigest()[:16]


def is_live(record: InstanceRecord | None) -> bool:
    return bool(record and record.pid and record.alive)


def config_changed(path: Path, record: InstanceRecord | None, started: Started) -> bool:
    """Whether the live server of ``record`` runs a config other than the file's content now.

    False when no server runs (a start reads the file anyway), when the file is gone
    (``config_removed`` says that) or when nothing was recorded of its start.
    """
    if record is None or not is_live(record) or not path.is_file():
        return False
    recorded = record.config_hash
    entry = started.get(record.name)
    if entry is not None and entry[0] == recorded and entry[1] is not None:
        return configcache.content_key(path) != entry[1]
    if not recorded:
        return False
    now = config_hash(path)
    return now is not None and now != recorded


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = value


def config_diff(was: Mapping[str, Any], now: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The fields that differ between two configs (as the loader dumps them, defaults
    included), by dotted path: ``[{"field": "model.context_size", "was": 256, "now":
    512}]``; a field only one side has shows :data:`UNSET` on the other."""
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    _flatten(dict(was), "", before)
    _flatten(dict(now), "", after)
    return [
        {"field": key, "was": before.get(key, UNSET), "now": after.get(key, UNSET)}
        for key in sorted(set(before) | set(after))
        if before.get(key, UNSET) != after.get(key, UNSET)
    ]
