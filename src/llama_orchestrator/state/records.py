"""One instance's record: its row of the state store's ``instances`` table, typed.

``StateStore.get`` and ``all`` return :class:`InstanceRecord`; ``ps``, ``health``,
``describe``, the dashboard, the control API and the event stream's snapshot all start
from it (or from :meth:`InstanceRecord.absent` for an instance that never ran), so every
reader shows the same defaults and the same uptime. Cheap imports only: ``ps``'s fast
path uses it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from llama_orchestrator.engine.states import ALIVE, Desired, Health, State
from llama_orchestrator.redact import shown_argv

# The status fields every reader lists, in this order: the record's columns but the
# PID's create time and ``updated_at`` (bookkeeping, not status).
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

_ALIVE = frozenset(s.value for s in ALIVE)


@dataclass(frozen=True)
class InstanceRecord:
    """What the state store holds of one instance. A null column takes the default
    below, so a reader never meets a missing status, health or restart count."""

    name: str
    desired: str = Desired.STOPPED.value
    status: str = State.STOPPED.value
    health: str = Health.UNKNOWN.value
    pid: int | None = None
    pid_create_time: float | None = None
    cmdline: tuple[str, ...] | None = None
    host: str | None = None
    port: int | None = None
    backend: str | None = None
    device: str | None = None
    model: str | None = None
    binary: str | None = None
    binary_version: str | None = None
    start_time: float | None = None
    ready_time: float | None = None
    last_health_check: float | None = None
    restart_count: int = 0
    config_hash: str | None = None
    exit_code: int | None = None
    exit_signal: int | None = None
    last_error: str | None = None
    updated_at: float | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> InstanceRecord:
        """The record of a row (``cmdline`` as stored: a JSON list, or already a list).

        Null columns take their defaults; columns this version does not know are left out.
        """
        values = {f.name: row[f.name] for f in _FIELDS if row.get(f.name) is not None}
        cmdline = values.get("cmdline")
        if isinstance(cmdline, str):
            cmdline = json.loads(cmdline) if cmdline else None
        values["cmdline"] = tuple(str(a) for a in cmdline) if cmdline else None
        return cls(**values)

    @classmethod
    def absent(cls, name: str) -> InstanceRecord:
        """The record of an instance that never ran: stopped, every field at its default."""
        return cls(name)

    @property
    def alive(self) -> bool:
        """Whether a server runs for it (starting, running or stopping)."""
        return self.status in _ALIVE

    def uptime_s(self, now: float) -> float | None:
        """Seconds since its server became ready (answered /health with 200), while it
        is alive; None before that, or when it does not run. Every reader's uptime."""
        if not self.alive or not self.ready_time:
            return None
        return round(max(now - self.ready_time, 0.0), 1)

    def process(self) -> tuple[int, float, list[str]] | None:
        """(pid, create time, argv) of the recorded server process, as recorded, to check
        that a live PID is still that very process (engine/process.py's Identity); None
        when the record does not hold all three."""
        if not (self.pid and self.pid_create_time and self.cmdline):
            return None
        return self.pid, self.pid_create_time, list(self.cmdline)

    def to_row(self) -> dict[str, Any]:
        """Every column, as the store writes it (``cmdline`` a list)."""
        row = dataclasses.asdict(self)
        row["cmdline"] = list(self.cmdline) if self.cmdline is not None else None
        return row

    def status_dict(self) -> dict[str, Any]:
        """The fields of :data:`STATUS_FIELDS`, with a key given as ``--api-key VALUE``
        shown as ``***`` (what the API, ``health`` and ``describe`` show)."""
        out = {f: getattr(self, f) for f in STATUS_FIELDS}
        out["cmdline"] = shown_argv(list(self.cmdline)) if self.cmdline else None
        return out


_FIELDS = fields(InstanceRecord)
