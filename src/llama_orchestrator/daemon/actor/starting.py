"""An instance actor's start, from its checks to a run begun (issue 17): the checks run
off the loop and post Prepared (daemon/actor/preflight.py), the scheduler admits the
start, the spawn runs off the loop and posts Spawned (daemon/actor/launch.py), and the
run is recorded, announced and watched. Everything here runs on the actor's loop and
never awaits, like the rest of its handlers (daemon/actor/handlers.py)."""

from __future__ import annotations

from llama_orchestrator.config.schema import HealthcheckConfig
from llama_orchestrator.daemon.actor import messages as m
from llama_orchestrator.daemon.actor import watch
from llama_orchestrator.daemon.actor.core import ActorCore
from llama_orchestrator.daemon.actor.kvhooks import restorer
from llama_orchestrator.daemon.actor.launch import AnyPlan, announce, open_run, spawn_off_loop
from llama_orchestrator.daemon.actor.messages import Outcome
from llama_orchestrator.daemon.actor.preflight import (
    Plan,
    RemotePlan,
    preflight,
    refusal,
    spawn_error,
)
from llama_orchestrator.daemon.actor.waiters import answer
from llama_orchestrator.daemon.events import EventKind
from llama_orchestrator.daemon.placement import index_of
from llama_orchestrator.engine.process import ServerProcess
from llama_orchestrator.engine.states import Desired, Health, State
from llama_orchestrator.errors import ErrorCode


class ActorStarting(ActorCore):
    def _fail(self, reason: str, tail: list[str], *, was_running: bool) -> None:
        """A failed start or run (handlers.py: the restart policy decides what follows)."""
        raise NotImplementedError

    def _on_stop(self, cmd: m.Stop) -> None:
        """A ``down`` (handlers.py); one that came while the server was spawned."""
        raise NotImplementedError

    def _begin_start(
        self, *, auto: bool, reason: str, by_person: bool = False, force: bool = False
    ) -> None:
        """Check, then (once admitted by the scheduler) spawn."""
        self._by_person = by_person  # until ready: a failure then is not retried
        if by_person and self._restart_count:  # RESTARTS counts since the last up/restart
            self._restart_count = 0
            self._record(restart_count=0)
        # The checks read files, resolve the host and probe the port: a side task runs
        # them off the loop and posts Prepared (issue 17). Until then the start is pending
        # as it is while waiting for admission: joined by another `up`, called off by `down`.
        self._preflight_gen += 1
        gen = self._preflight_gen
        self._preflight = (gen, auto, reason, force)
        # The config is read now (Configs: "up reads the file now"), the rest off the loop.
        current = self._ctx.configs.refresh(self.name, self.snapshot)
        home = self._ctx.home
        checks = preflight(self._ctx.offload, home, self.name, current, gen, self.post)
        self._spawn_task("preflight", checks)

    def _on_prepared(self, msg: m.Prepared) -> None:
        if self._preflight is None or self._preflight[0] != msg.generation:
            return  # a start called off meanwhile
        _, auto, reason, force = self._preflight
        self._preflight = None
        plan = msg.plan
        if isinstance(plan, Outcome):
            self._refused(plan, auto=auto)
            return
        assert isinstance(plan, Plan | RemotePlan), plan
        # A restart keeps the admission it had; a remote instance holds nothing here, so
        # the scheduler is never asked (issue 13). An ``auto`` instance is placed at each
        # start (issue 7): a restart asks again, keeping its admission (forced), and may
        # move to a device with more room.
        held = self._ctx.scheduler.holds(self.name)
        if isinstance(plan, RemotePlan) or (held and not plan.loaded.config.gpu.auto):
            self._launch(plan, auto=auto, reason=reason)
            return
        ticket = self._ctx.scheduler.request(
            plan.claim(self.name, force=force or held),
            lambda a: self.post(
                m.Admitted(a.ticket, a.granted, a.reason, a.victims, a.code, a.device, a.placed)
            ),
        )
        self._admission = (ticket, plan, auto, reason)

    def _on_admitted(self, msg: m.Admitted) -> None:
        if self._admission is None or self._admission[0] != msg.ticket:
            if msg.granted:  # a start that was called off meanwhile
                self._ctx.scheduler.release(self.name)
            return
        _, plan, auto, reason = self._admission
        self._admission = None
        if msg.device and msg.granted:  # an ``auto`` instance, placed (daemon/placement.py)
            plan = plan.placed(index_of(msg.device), self._ctx.home.root)
            self._ctx.bus.emit(self.name, EventKind.PLACED, None, msg.device, msg.placed)
        if msg.granted:  # the reason: what its load waited for (daemon/release.py)
            self._room = msg.victims
            said = f"{reason}; {msg.reason}" if msg.reason else reason
            self._launch(plan, auto=auto, reason=said)
        elif msg.code == "port":
            why = f"{plan.loaded.path}: server.port: {msg.reason}; choose another server.port"
            self._refused(refusal(ErrorCode.PORT_IN_USE, why), auto=auto)
        elif msg.code == "device":
            why = f"{plan.loaded.path}: gpu.device_id: {msg.reason}"
            self._refused(refusal(ErrorCode.CONFIG_INVALID, why), auto=auto)
        else:  # an ``auto`` one says which device it was refused on, and why that one
            why = f"{msg.reason} ({msg.placed})" if msg.placed else msg.reason
            self._refused(refusal(ErrorCode.NO_ROOM, why), auto=auto)

    def _refused(self, outcome: Outcome, *, auto: bool) -> None:
        self._record(last_error=outcome.message)
        self._ctx.bus.emit(self.name, EventKind.START_REFUSED, None, None, outcome.message)
        self._waiters.start_failed(outcome)
        if auto:  # a restart that cannot even begin counts as a failed attempt
            self._set_state(State.STARTING, "restart")  # BACKOFF -> STARTING
            self._fail(outcome.message, [], was_running=False)
        elif self._state is State.BACKOFF:  # `up` during backoff, now refused: stop waiting
            self._set_state(State.FATAL, f"start refused: {outcome.message}")  # BACKOFF -> FATAL

    def _launch(self, plan: AnyPlan, *, auto: bool, reason: str) -> None:
        self._loaded = plan.loaded
        self._set_desired(Desired.RUNNING)
        self._set_state(State.STARTING, "restart" if auto else reason)  # -> STARTING
        if isinstance(plan, RemotePlan):
            self._begun(plan, open_run(self._ctx, plan, self.name))  # nothing to spawn
            return
        # Opening the logs and Popen block for milliseconds: a side task does it off the
        # loop and posts Spawned (issue 17). A stop meanwhile waits for it (_on_stop).
        self._spawn_gen += 1
        self._spawning = (self._spawn_gen, plan)
        task = spawn_off_loop(self._ctx, plan, self.name, self._spawn_gen, self.post)
        self._spawn_task("spawn", task)

    def _on_spawned(self, msg: m.Spawned) -> None:
        if self._spawning is None or self._spawning[0] != msg.generation:
            if not isinstance(msg.handle, OSError):  # a spawn nobody waits for: not to run
                msg.handle().kill()
            return
        _, plan = self._spawning
        self._spawning = None
        if isinstance(msg.handle, OSError):
            why = spawn_error(plan.spec, msg.handle)
            self._waiters.start_failed(refusal(ErrorCode.SPAWN, why))
            self._fail(why, [], was_running=False)
        else:
            self._begun(plan, msg.handle())
        stops, self._stops_waiting = self._stops_waiting, []
        for cmd in stops:  # the downs that came while it was being spawned
            self._on_stop(cmd)

    def _begun(self, plan: AnyPlan, proc: ServerProcess) -> None:
        """A run's handle is open: record, announce, accept, watch."""
        loaded = plan.loaded
        self._proc, self._url = proc, plan.url
        self._start_mono = self._ctx.clock.monotonic()
        self._stderr_path = plan.spec.stderr if isinstance(plan, Plan) else None
        self.leases.api_key = plan.api_key if isinstance(plan, RemotePlan) else None
        self._set_health(Health.UNKNOWN, "starting")
        self._record(**plan.record(proc, self._ctx.clock.time()))
        announce(self._ctx, plan, proc, self.name)
        accepted = Outcome(True, "starting", pid=self._shown_pid(), accepted=True)
        answer(self._waiters.accepted, accepted)
        self._watch(proc, loaded.config.healthcheck, ready=False)
        if isinstance(plan, Plan):
            self._spawn_task("version", watch.record_version(plan.binary, self.post))

    def _watch(self, proc: ServerProcess, hc: HealthcheckConfig, *, ready: bool) -> None:
        """The exit watcher, and the readiness poll (starting) or the health monitor."""
        self._spawn_task("exit", watch.watch_exit(proc, self.post))
        if self._url is None:  # an adopted server with neither a recorded address nor a config
            return
        args = (proc, self._url, hc, self._ctx.http, self._ctx.clock, self.post)
        if ready:
            self._misses = 0
            self._spawn_task("monitor", watch.monitor(*args))
            self._watch_memory(proc)
        else:
            restore = restorer(self._ctx, self._loaded, self._url)
            self._spawn_task("ready", watch.await_ready(*args, before_ready=restore))
