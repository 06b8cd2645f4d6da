"""One instance's status as every reader shows it, from its state-store row.

``ps``, ``health``, ``describe``, the dashboard and the daemon's API all start from the
same row of the ``instances`` table (or from no row at all, for an instance that never
ran); this is the one place that turns it into the status they show, with the same
defaults everywhere. Cheap imports only: ``ps``'s fast path uses it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llama_orchestrator.engine.states import Desired, Health, State
from llama_orchestrator.redact import shown_argv

# The status fields, in the order readers list them.
STATUS_FIELDS = (
    "name",
    "desired",
    "status",
    "health",
    "pid",
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
    "exit_code",
    "exit_signal",
    "last_error",
    "config_hash",
    "cmdline",
)

# What a field says when the row lacks it (an instance that never ran has no row).
STATUS_DEFAULTS: dict[str, Any] = {
    "desired": Desired.STOPPED.value,
    "status": State.STOPPED.value,
    "health": Health.UNKNOWN.value,
    "restart_count": 0,
}


def instance_status(name: str, row: Mapping[str, Any] | None) -> dict[str, Any]:
    """The normalised status of instance ``name`` from its state row (None: no row).

    Every field of :data:`STATUS_FIELDS` is present; a missing or null field takes its
    :data:`STATUS_DEFAULTS` value (else None), and columns outside the list (the PID's
    create time, ``updated_at``) are left out.
    """
    row = row or {}
    out: dict[str, Any] = {}
    for field in STATUS_FIELDS:
        value = row.get(field)
        out[field] = STATUS_DEFAULTS.get(field) if value is None else value
    if out["cmdline"]:  # a key given as --api-key VALUE is shown as ***
        out["cmdline"] = shown_argv([str(a) for a in out["cmdline"]])
    out["name"] = name
    return out
