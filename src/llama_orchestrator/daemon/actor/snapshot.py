"""What an instance is, as everything but its actor reads it: one frozen snapshot.

The actor replaces its ``snapshot`` whenever something in it changes (daemon/actor/
core.py ``_publish``: on every write of its record, ``_record``, which ``_set_state``,
``_set_health`` and ``_set_desired`` go through, so a change is on the snapshot before
its event is published; and after each message it handles), so a reader on the daemon's
loop (the gateway's directory, the scheduler's seats, the control API, metrics, the
reloader) gets a consistent picture with plain attribute reads, and none of them can
change it.
The only other thing of an actor that others touch is its ``Leases`` (daemon/actor/
leases.py), the one shared mutable object: the gateway's requests in flight.

The record fields (host, port, backend, times, last error, config hash) are the ones the
actor writes to the state store; the snapshot holds them so the daemon never reads its
own rows back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from llama_orchestrator.config.loader import LoadedConfig
from llama_orchestrator.daemon.actor.memory import DeviceMemory
from llama_orchestrator.engine.states import Desired, Health, State
from llama_orchestrator.state.records import InstanceRecord

AT_REST = frozenset({State.STOPPED, State.EXITED, State.FATAL})


@dataclass(frozen=True, slots=True)
class InstanceSnapshot:
    name: str
    state: State = State.STOPPED
    desired: Desired = Desired.STOPPED
    health: Health = Health.UNKNOWN
    routable: bool = False  # running and healthy: the gateway may lend it a request
    attached: bool = False  # a run's handle is held: a process of ours, adopted, or a remote's
    pid: int | None = None  # the server's PID (None: no process, or a remote instance)
    remote: bool = False  # the run is a remote instance's (nothing spawned here)
    url: str | None = None  # where its server answers (health checks, the gateway)
    host: str | None = None  # as recorded at its start (or found at adoption)
    port: int | None = None
    backend: str | None = None  # cpu, cuda, ..., or "remote"
    loaded: LoadedConfig | None = None  # the config of the run (the last start's)
    config_hash: str | None = None  # the hash of the config its server was started with
    restart_count: int = 0  # automatic restarts since the last up or restart
    failures: int = 0  # the failure streak the restart policy counts
    last_error: str | None = None
    on_demand: bool = False  # this run was started by a request through the gateway
    start_time: float | None = None  # wall clock: when the current (or last) run began
    ready_time: float | None = None  # wall clock: when it answered /health 200
    start_mono: float = 0.0  # monotonic: when the current (or last) run began (0: none)
    ready_mono: float = 0.0  # monotonic: when it last became ready (0: never)
    misses: int = 0  # consecutive failed health checks
    checks: tuple[dict[str, Any], ...] = ()  # the last health checks, oldest first
    last_check: float | None = None  # wall clock of the last check (or of ready)
    # the run's memory per device key: estimate, last reading, peak (issue 18; empty
    # until it is ready, and once it is let go)
    memory: Mapping[str, DeviceMemory] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        """It wants a server or has one: desired running, not at rest, or a run held."""
        return self.desired is Desired.RUNNING or self.state not in AT_REST or self.attached

    @property
    def running_hash(self) -> str | None:
        """The config hash its server runs with (None: no server held, or not known)."""
        return self.config_hash if self.attached else None

    @property
    def load_s(self) -> float:
        """Its last start to ready, in seconds (0: not known)."""
        if not self.ready_time or not self.start_time:
            return 0.0
        return max(self.ready_time - self.start_time, 0.0)


# The record's fields the snapshot keeps, by their name there (the actor's ``_record``).
KEPT = {
    "host": "host",
    "port": "port",
    "backend": "backend",
    "config_hash": "config_hash",
    "last_error": "last_error",
    "start_time": "start_time",
    "ready_time": "ready_time",
    "last_health_check": "last_check",
}


def from_record(record: InstanceRecord) -> InstanceSnapshot:
    """Where an actor starts: its record as the last daemon left it (no run held yet)."""
    return InstanceSnapshot(
        name=record.name,
        state=State(record.status),
        desired=Desired(record.desired),
        health=Health(record.health),
        host=record.host,
        port=record.port,
        backend=record.backend,
        config_hash=record.config_hash,
        restart_count=record.restart_count,
        last_error=record.last_error,
        start_time=record.start_time,
        ready_time=record.ready_time,
        last_check=record.last_health_check,
    )
