"""An instance actor's state and the primitives that change it (daemon/actor/handlers.py has the
handlers). Everything here runs on the actor's own loop, like the handlers."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from llama_orchestrator.config.loader import LoadedConfig
from llama_orchestrator.config.schema import HealthcheckConfig
from llama_orchestrator.daemon.actor import messages as m
from llama_orchestrator.daemon.actor.context import ActorContext
from llama_orchestrator.daemon.actor.leases import CheckLog, Leases
from llama_orchestrator.daemon.actor.mailbox import Mailbox
from llama_orchestrator.daemon.actor.memory import MemoryBook, describe_first, watch_memory
from llama_orchestrator.daemon.actor.preflight import Plan, memory_mb
from llama_orchestrator.daemon.actor.snapshot import KEPT, from_record
from llama_orchestrator.daemon.actor.waiters import Waiters
from llama_orchestrator.daemon.events import EventKind
from llama_orchestrator.daemon.placement import measured_device
from llama_orchestrator.engine.process import ServerProcess, tail_lines
from llama_orchestrator.engine.remote import RemoteServer
from llama_orchestrator.engine.states import Desired, Health, State, check_transition
from llama_orchestrator.gateway.backend import Endpoint
from llama_orchestrator.gpu.overhead import MiB, overhead_key
from llama_orchestrator.state import memory as recorded_memory
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
        self._ctx = ctx
        record = record or InstanceRecord.absent(name)
        # The initial state is read from the record as-is: it is where we left off. Only
        # this actor reads or changes these; everyone else reads ``snapshot`` (published
        # by ``_publish``) and ``leases``.
        self._state = State(record.status)
        self._desired = Desired(record.desired)
        self._health = Health(record.health)
        self._restart_count = record.restart_count
        self._failures = 0
        self._proc: ServerProcess | None = None
        self._loaded: LoadedConfig | None = None
        self._url: str | None = None
        self._checks = CheckLog(ctx.clock)  # the last checks, for `llama-orch health`
        self._misses = 0  # consecutive failed checks
        self.leases = KeyedLeases(ctx.clock)  # the gateway's requests in flight
        self._waiters = Waiters()
        # a start whose checks run (daemon/actor/preflight.py): generation, auto, why, force
        self._preflight: tuple[int, bool, str, bool] | None = None
        self._preflight_gen = 0
        self._spawning: tuple[int, Plan] | None = None  # a spawn off the loop: generation, plan
        self._spawn_gen = 0
        self._stops_waiting: list[m.Stop] = []  # downs that came while it was spawned
        self._admission: tuple[int, Plan, bool, str] | None = None  # ticket, plan, auto, why
        self._room: tuple[str, ...] = ()  # instances stopped to make room for this start
        self._on_demand = False  # this run was started by a request (gateway.json default_ttl)
        self._failing: tuple[str, bool] | None = None  # a failure stop: reason, was running
        self._backoff_gen = 0
        self._by_person = False  # the start in progress was asked for by a person
        self._ready_mono = 0.0
        self._start_mono = 0.0
        self._check_recorded = float("-inf")  # when last_health_check was last written
        self._stderr_path: Any = None
        self._memory = MemoryBook()  # the run's readings (daemon/actor/memory.py)
        self.snapshot = from_record(record)
        self._publish()

    # -- what readers see ----------------------------------------------------------------

    def _publish(self, **record: Any) -> None:
        """Replace ``snapshot`` with the actor's state now; ``record``: the record fields
        the snapshot keeps that changed (the others stay as they were)."""
        proc, state, health = self._proc, self._state, self._health
        self.snapshot = replace(
            self.snapshot,
            state=state,
            desired=self._desired,
            health=health,
            routable=state is State.RUNNING and health is Health.HEALTHY,
            attached=proc is not None,
            pid=(proc.pid or None) if proc is not None else None,
            remote=self._remote,
            url=self._url,
            loaded=self._loaded,
            restart_count=self._restart_count,
            failures=self._failures,
            on_demand=self._on_demand,
            start_mono=self._start_mono,
            ready_mono=self._ready_mono,
            misses=self._misses,
            checks=self._checks.recent(),
            memory=self._memory.view(proc.pid if proc is not None else None),
            **record,
        )

    def _record(self, **fields: Any) -> None:
        """Write ``fields`` to the instance's record; the snapshot shows the ones it keeps."""
        self._ctx.store.update(self.name, **fields)
        self._publish(**{KEPT[k]: v for k, v in fields.items() if k in KEPT})

    @property
    def _remote(self) -> bool:
        """Is the current run a remote instance's (nothing spawned, nothing to signal)?
        Its handle says, when there is one: a server adopted at daemon start whose config
        became remote meanwhile is still a process of ours."""
        if self._proc is not None:
            return isinstance(self._proc, RemoteServer)
        return self._loaded is not None and self._loaded.remote is not None

    def _shown_pid(self) -> int | None:
        """The PID replies carry: None for a remote instance's run."""
        return self._proc.pid or None if self._proc is not None else None

    def _set_state(self, new: State, reason: str) -> None:
        """The one place a state changes: validated, recorded, announced."""
        old = self._state
        check_transition(old, new)
        self._state = new
        self._record(status=new.value)
        self._ctx.bus.emit(self.name, EventKind.STATE, old.value, new.value, reason)
        if new in (State.STOPPED, State.EXITED, State.FATAL):
            self._ctx.scheduler.release(self.name)  # holds nothing any more

    def _set_health(self, new: Health, reason: str) -> None:
        if new is self._health:
            return
        old, self._health = self._health, new
        self._record(health=new.value)
        self._ctx.bus.emit(self.name, EventKind.HEALTH, old.value, new.value, reason)

    def _set_desired(self, desired: Desired) -> None:
        if desired is not self._desired:
            self._desired = desired
            self._record(desired=desired.value)

    # -- memory (issue 18) ----------------------------------------------------------------

    def _watch_memory(self, proc: ServerProcess) -> None:
        """Read a ready run's memory now and every few seconds, off the loop."""
        if not proc.pid or self._remote:
            return
        held = self._ctx.scheduler.holders.get(self.name)
        if held is not None:
            estimate = held.memory_mb
        else:  # adopted: its claim is on its way to the scheduler; the estimate is cached
            estimate = memory_mb(self._loaded) if self._loaded is not None else {}
        self._memory.begin(proc.pid, estimate)
        device = measured_device(self._loaded, estimate)
        ctx = self._ctx
        task = watch_memory(ctx.measure, ctx.offload, ctx.clock, proc.pid, device, self.post)
        self._spawn_task("memory", task)

    def _on_memory(self, msg: m.MemoryRead) -> None:
        """A reading: kept; a device's first one of the run teaches its overhead."""
        for device in self._memory.read(msg.pid, msg.readings):
            seen = self._memory.devices[device]
            key = overhead_key(device, self._memory.devices)
            if seen.estimate_mb is not None and seen.measured_mb is not None:
                self._ctx.overheads.learn(key, seen.estimate_mb * MiB, seen.measured_mb * MiB)
            said = describe_first(device, seen, self._ctx.overheads.mib(key))
            self._ctx.bus.emit(self.name, EventKind.MEMORY, None, str(seen.measured_mb), said)
        shown = {d: v.to_dict() for d, v in self._memory.devices.items()}
        if shown != self._memory.written and msg.pid == self._memory.pid:
            self._memory.written = shown  # for ps and describe (state/memory.py)
            text = recorded_memory.encode(msg.pid, shown)
            self._ctx.store.meta_set(recorded_memory.key(self.name), text)

    def _join_start(self, cmd: m.Start | m.Restart) -> None:
        spawned = self._proc.pid if self._state is State.STARTING and self._proc else None
        self._waiters.join_start(cmd, spawned)

    def _grace(self) -> float:
        return self._loaded.config.server.stop_timeout if self._loaded else STOP_GRACE_S

    def _healthcheck(self) -> HealthcheckConfig:
        return self._loaded.config.healthcheck if self._loaded else HealthcheckConfig()

    def _stderr_tail(self) -> list[str]:
        return tail_lines(self._stderr_path, 15) if self._stderr_path else []
