"""An instance actor's state and the primitives that change it (daemon/actor/handlers.py has the
handlers). Everything here runs on the actor's own loop, like the handlers."""

from __future__ import annotations

from typing import Any

from llama_orchestrator.config.loader import LoadedConfig
from llama_orchestrator.config.schema import HealthcheckConfig
from llama_orchestrator.daemon.actor import messages as m
from llama_orchestrator.daemon.actor.context import ActorContext
from llama_orchestrator.daemon.actor.leases import CheckLog, Leases
from llama_orchestrator.daemon.actor.mailbox import Mailbox
from llama_orchestrator.daemon.actor.preflight import Plan
from llama_orchestrator.daemon.actor.waiters import Waiters
from llama_orchestrator.daemon.events import EventKind
from llama_orchestrator.engine.process import ServerProcess, tail_lines
from llama_orchestrator.engine.remote import RemoteServer
from llama_orchestrator.engine.states import Desired, Health, State, check_transition
from llama_orchestrator.gateway.backend import Endpoint
from llama_orchestrator.state.records import InstanceRecord

STOP_GRACE_S = 10.0  # SIGTERM -> SIGKILL when no config says otherwise (server.stop_timeout)
# last_health_check goes on record at most this often (issue 17): every check is kept in
# memory for `llama-orch health`; the record is for when the daemon is down, where a few
# seconds do not matter, and a check every second need not be a write every second.
CHECK_RECORD_S = 5.0


class KeyedLeases(Leases):
    """Leases whose endpoints carry the key of the run they lend (a remote instance's
    ``api_key_env``, read at its start), so the gateway sends it upstream."""

    api_key: str | None = None

    def acquire(self, instance: str, url: str | None) -> Endpoint | None:
        endpoint = super().acquire(instance, url)
        if endpoint is None or self.api_key is None:
            return endpoint
        return Endpoint(endpoint.instance, endpoint.base_url, self.api_key)


class ActorCore(Mailbox):
    def __init__(self, name: str, ctx: ActorContext, record: InstanceRecord | None) -> None:
        super().__init__(name)
        self.ctx = ctx
        record = record or InstanceRecord.absent(name)
        # The initial state is read from the record as-is: it is where we left off.
        self.state = State(record.status)
        self.desired = Desired(record.desired)
        self.health = Health(record.health)
        self.restart_count = record.restart_count
        self.failures = 0
        self.proc: ServerProcess | None = None
        self.loaded: LoadedConfig | None = None
        self.url: str | None = None
        self.checks = CheckLog(ctx.clock)  # the last checks, for `llama-orch health`
        self.misses = 0  # consecutive failed checks
        self.leases = KeyedLeases(ctx.clock)  # the gateway's requests in flight
        self.waiters = Waiters()
        # a start whose checks run (daemon/actor/preflight.py): generation, auto, why, force
        self._preflight: tuple[int, bool, str, bool] | None = None
        self._preflight_gen = 0
        self._admission: tuple[int, Plan, bool, str] | None = None  # ticket, plan, auto, why
        self._room: tuple[str, ...] = ()  # instances stopped to make room for this start
        self.on_demand = False  # this run was started by a request (gateway.json default_ttl)
        self._failing: tuple[str, bool] | None = None  # a failure stop: reason, was running
        self._backoff_gen = 0
        self._by_person = False  # the start in progress was asked for by a person
        self.ready_mono = 0.0
        self._check_recorded = float("-inf")  # when last_health_check was last written
        self._stderr_path: Any = None

    @property
    def remote(self) -> bool:
        """Is the current run a remote instance's (nothing spawned, nothing to signal)?
        Its handle says, when there is one: a server adopted at daemon start whose config
        became remote meanwhile is still a process of ours."""
        if self.proc is not None:
            return isinstance(self.proc, RemoteServer)
        return self.loaded is not None and self.loaded.remote is not None

    def shown_pid(self) -> int | None:
        """The PID replies carry: None for a remote instance's run."""
        return self.proc.pid or None if self.proc is not None else None

    def _set_state(self, new: State, reason: str) -> None:
        """The one place a state changes: validated, recorded, announced."""
        old = self.state
        check_transition(old, new)
        self.state = new
        self.ctx.store.update(self.name, status=new.value)
        self.ctx.bus.emit(self.name, EventKind.STATE, old.value, new.value, reason)
        if new in (State.STOPPED, State.EXITED, State.FATAL):
            self.ctx.scheduler.release(self.name)  # holds nothing any more

    def _set_health(self, new: Health, reason: str) -> None:
        if new is self.health:
            return
        old, self.health = self.health, new
        self.ctx.store.update(self.name, health=new.value)
        self.ctx.bus.emit(self.name, EventKind.HEALTH, old.value, new.value, reason)

    def _set_desired(self, desired: Desired) -> None:
        if desired is not self.desired:
            self.desired = desired
            self.ctx.store.update(self.name, desired=desired.value)

    def _join_start(self, cmd: m.Start | m.Restart) -> None:
        spawned = self.proc.pid if self.state is State.STARTING and self.proc else None
        self.waiters.join_start(cmd, spawned)

    def _grace(self) -> float:
        return self.loaded.config.server.stop_timeout if self.loaded else STOP_GRACE_S

    def _healthcheck(self) -> HealthcheckConfig:
        return self.loaded.config.healthcheck if self.loaded else HealthcheckConfig()

    def _stderr_tail(self) -> list[str]:
        return tail_lines(self._stderr_path, 15) if self._stderr_path else []
