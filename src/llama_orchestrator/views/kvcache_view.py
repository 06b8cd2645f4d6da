"""What ``describe`` shows of an instance's saved slots (issue 21): read from the index
the daemon keeps, ``<home>/kv/index.json`` (daemon/kvcache.py)."""

from __future__ import annotations

import json
import time
from typing import Any

from llama_orchestrator.home import Home


def kv_cache_of(home: Home, name: str) -> dict[str, Any]:
    """The instance's saved files: how many, their tokens and bytes, the newest's age."""
    from llama_orchestrator.engine.command import KV_DIR

    try:
        files = json.loads((home.root / KV_DIR / "index.json").read_text())["files"]
        mine = [f for f in files if f["instance"] == name]
    except (OSError, ValueError, KeyError, TypeError):
        mine = []
    newest = max((f["saved_at"] for f in mine), default=None)
    return {
        "files": len(mine),
        "tokens": sum(int(f["tokens"]) for f in mine),
        "bytes": sum(int(f["bytes"]) for f in mine),
        "saved_at": newest,
        "age_s": None if newest is None else round(time.time() - newest, 1),
    }


def kv_cache_lines(kv: dict[str, Any] | None) -> list[str]:
    if not kv or not kv.get("files"):
        return [f"{'KV cache:':16}no saved slots"]
    mib = kv["bytes"] / (1024 * 1024)
    said = f"{kv['files']} saved slot(s), {kv['tokens']} tokens, {mib:.1f} MiB"
    return [f"{'KV cache:':16}{said}, saved {kv['age_s']:g}s ago"]
