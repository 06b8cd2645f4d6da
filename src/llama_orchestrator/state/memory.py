"""A running instance's memory per device, as its actor last recorded it (issue 18), for
the commands that read the state database (``ps --json``, ``describe``) without asking
the daemon.

The actor writes one ``meta`` entry per instance, :func:`key`, whenever a reading
changes what it shows (through the daemon's batched writer): ``{"pid": PID, "devices":
{"<device>": {"estimate_mb", "measured_mb", "peak_mb", ...}}}``. The PID ties it to one
run: a reader shows it only beside a record of that same PID, so a run that ended (or a
daemon that died) never leaves a stale figure on a server started since.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

PREFIX = "memory:"


class Meta(Protocol):
    def meta_get(self, key: str) -> str | None: ...


def key(name: str) -> str:
    return PREFIX + name


def encode(pid: int, devices: dict[str, dict[str, Any]]) -> str:
    return json.dumps({"pid": pid, "devices": devices}, sort_keys=True)


def recorded(store: Meta, name: str, pid: int | None) -> dict[str, Any] | None:
    """``{device: {...}}`` recorded for the run of ``pid`` (None: none, or another run's)."""
    if pid is None:
        return None
    try:
        raw = store.meta_get(key(name))
        found = json.loads(raw) if raw else None
    except Exception:  # an older database, a value this cannot read: nothing to show
        return None
    if not isinstance(found, dict) or found.get("pid") != pid:
        return None
    devices = found.get("devices")
    return devices if isinstance(devices, dict) else None
