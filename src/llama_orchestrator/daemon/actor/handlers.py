"""One instance's actor: the only code that changes that instance's state.

Commands (start, stop, restart) arrive in its inbox from the control API and the
gateway; its side tasks (daemon/actor/watch.py: exit watcher, readiness poll, health monitor,
stop, backoff timer) only post reports to the same inbox. Every handler runs on the
actor's loop and none of them awaits, so the actor answers every message at once: a
``down`` during a slow stop or a start waiting for admission is handled immediately.

Desired state (``up`` -> running, ``down`` -> stopped) is recorded and converged onto,
restarting with backoff on failure (daemon/actor/policy.py decides how). ``leases`` count the
gateway's requests on the running server; the scheduler admits starts (budgets)."""

from __future__ import annotations

import logging

from llama_orchestrator.config.loader import LoadedConfig
from llama_orchestrator.config.schema import RestartPolicy
from llama_orchestrator.daemon.actor import messages as m
from llama_orchestrator.daemon.actor import watch
from llama_orchestrator.daemon.actor.adopt import adopt_recorded, held_claim
from llama_orchestrator.daemon.actor.core import CHECK_RECORD_S, STOP_GRACE_S
from llama_orchestrator.daemon.actor.kvhooks import kv_for, save_then_stop
from llama_orchestrator.daemon.actor.messages import Outcome
from llama_orchestrator.daemon.actor.policy import after_failure
from llama_orchestrator.daemon.actor.preflight import refusal
from llama_orchestrator.daemon.actor.starting import ActorStarting
from llama_orchestrator.daemon.actor.waiters import answer
from llama_orchestrator.daemon.events import EventKind
from llama_orchestrator.engine.states import ALIVE, Desired, Health, State
from llama_orchestrator.errors import ErrorCode
from llama_orchestrator.state.records import InstanceRecord

log = logging.getLogger("llama_orchestrator.supervisor")


class InstanceActor(ActorStarting):
    _downing = False  # stopping for a person's `down` (a waiting request must not undo it)

    def _dispatch(self, msg: m.Message) -> None:
        match msg:
            case m.Start():
                self._on_start(msg)
            case m.Stop():
                self._on_stop(msg)
            case m.Restart():
                self._on_restart(msg)
            case m.Exited():
                self._on_exited(msg)
            case m.Loading() if msg.proc is self._proc and self._state is State.STARTING:
                self._set_health(Health.LOADING, "/health answered 503 (loading the model)")
            case m.Ready():
                self._on_ready(msg)
            case m.NotReady():
                self._on_not_ready(msg)
            case m.Checked():
                self._on_checked(msg)
            case m.Stopped():
                self._on_stopped(msg)
            case m.BackoffDone():
                self._on_backoff_done(msg)
            case m.VersionKnown():
                self._record(binary_version=msg.version)
            case m.Prepared():
                self._on_prepared(msg)
            case m.Spawned():
                self._on_spawned(msg)
            case m.Admitted():
                self._on_admitted(msg)
            case m.Resume():
                self._on_resume(msg)
            case m.Autostart():
                self._on_autostart()
            case m.MemoryRead():
                self._on_memory(msg)

    # -- commands ----------------------------------------------------------------------

    def _on_start(self, cmd: m.Start | m.Restart, reason: str = "up requested") -> None:
        if self._state is State.RUNNING and self._proc is not None:
            self._set_desired(Desired.RUNNING)
            message = "already running"
            now = self._ctx.configs.refresh(self.name, self.snapshot)  # the file now
            was = self._loaded.raw_hash if self._loaded else None
            if isinstance(now, LoadedConfig) and was is not None and now.raw_hash != was:
                message += f" (its config changed since: `llama-orch restart {self.name}`)"
            cmd.reply.set_result(Outcome(True, message, pid=self._shown_pid()))
            return
        if self._state is State.STOPPING:
            if isinstance(cmd, m.Start) and cmd.on_demand and self._downing:
                # A request that waited must not undo a `down` (issue 19, item 4); an
                # eviction's or idle stop's is followed by the start a request asks for.
                why = f"stopped by `down`; `llama-orch up {self.name}` starts it again"
                cmd.reply.set_result(refusal(ErrorCode.STOPPED, why))
                return
            self._set_desired(Desired.RUNNING)
            self._downing = False
            self._waiters.after_stop.append(cmd)  # starts once the stop has finished
            return
        if self._state is State.STARTING or self._admission is not None or self._preflight:
            self._join_start(cmd)  # a concurrent `up` joins the start in progress
            return
        self._cancel_task("backoff")
        self._failures = 0
        self._join_start(cmd)
        self._on_demand = isinstance(cmd, m.Start) and cmd.on_demand
        force = isinstance(cmd, m.Start) and cmd.force
        self._begin_start(auto=False, reason=reason, by_person=True, force=force)

    def _on_restart(self, cmd: m.Restart) -> None:
        if self._state in (State.RUNNING, State.STARTING) and self._proc is not None:
            # The callers of a start in progress get the outcome of the restarted one.
            waiting = self._waiters.restart_queue()
            self._begin_stop("restart requested", save=True)
            self._waiters.after_stop.extend([*waiting, cmd])
            return
        if self._state is State.STOPPING:
            self._waiters.after_stop.append(cmd)  # concurrent restarts coalesce into one start
            return
        self._on_start(cmd, reason="restart requested")

    def _on_stop(self, cmd: m.Stop) -> None:
        if self._spawning is not None:  # handled once the process exists (milliseconds)
            self._stops_waiting.append(cmd)
            return
        self._set_desired(Desired.STOPPED)
        self._downing = cmd.reason == m.DOWN_REASON  # a person's `down`, not an eviction
        self._cancel_task("backoff")
        stopped = refusal(ErrorCode.STOPPED, "stopped by `down` before it was ready")
        self._waiters.drop_after_stop(stopped)
        if self._preflight is not None:  # still being checked: nothing runs yet
            self._cancel_task("preflight")
            self._preflight = None
            self._waiters.start_failed(stopped)
        if self._admission is not None:  # still waiting for admission: nothing runs yet
            self._ctx.scheduler.cancel(self._admission[0])
            self._admission = None
            self._waiters.start_failed(stopped)
        if self._state is State.BACKOFF:
            self._set_state(State.STOPPED, "down requested during backoff")  # BACKOFF -> STOPPED
            cmd.reply.set_result(Outcome(True, "stopped"))
        elif self._state in (State.EXITED, State.FATAL):
            self._set_state(State.STOPPED, "down requested")  # EXITED/FATAL -> STOPPED
            cmd.reply.set_result(Outcome(True, "already stopped"))
        elif self._state is State.STOPPING:
            self._waiters.stopped.append(cmd.reply)
        elif self._proc is None or self._state is State.STOPPED:
            cmd.reply.set_result(Outcome(True, "already stopped"))
        else:
            if self._state is State.STARTING:
                answer(
                    self._waiters.ready,
                    refusal(ErrorCode.STOPPED, "stopped by `down` while it was still loading"),
                )
            self._waiters.stopped.append(cmd.reply)
            self._begin_stop(cmd.reason, grace=cmd.grace, save=True)

    def _begin_stop(self, reason: str, *, grace: float | None = None, save: bool = False) -> None:
        """STARTING/RUNNING -> STOPPING; a task stops the process and posts Stopped. With
        ``save`` (a stop that is not a failure) a running server's slots are saved first."""
        assert self._proc is not None
        self._cancel_task("ready")
        self._cancel_task("monitor")
        running = self._state is State.RUNNING
        self._set_state(State.STOPPING, reason)  # STARTING/RUNNING -> STOPPING
        grace = self._grace() if grace is None else grace
        kv = kv_for(self._ctx, self._loaded) if save and running else None
        if kv is not None and self._loaded is not None and self._url is not None:
            home, proc = self._ctx.home.root, self._proc
            task = save_then_stop(kv, self._loaded, self._url, home, proc, grace, reason, self.post)
            self._spawn_task("stop", task)
            return
        self._spawn_task("stop", watch.stop_process(self._proc, grace, reason, self.post))

    def _on_stopped(self, msg: m.Stopped) -> None:
        if msg.proc is not self._proc or self._state is not State.STOPPING:
            return
        self._proc = None
        status = msg.status
        self._record(pid=None, exit_code=status.code, exit_signal=status.signal)
        failing, self._failing = self._failing, None
        wanted = self._desired is Desired.RUNNING and not self._waiters.after_stop
        if failing is not None and wanted:
            reason, was_running = failing
            self._ctx.bus.emit(
                self.name, EventKind.EXIT, None, None, f"stopped as unhealthy: {status.describe()}"
            )
            self._fail(reason, self._stderr_tail(), was_running=was_running)
            return
        self._set_health(Health.UNKNOWN, "stopped")
        self._set_state(State.STOPPED, f"stopped ({status.describe()})")  # STOPPING -> STOPPED
        answer(self._waiters.stopped, Outcome(True, "stopped"))
        queued = self._waiters.take_after_stop()
        if queued:
            self._failures = 0
            for cmd in queued:
                self._join_start(cmd)
            self._set_desired(Desired.RUNNING)
            self._begin_start(auto=False, reason="restart requested", by_person=True)

    def _on_ready(self, msg: m.Ready) -> None:
        if msg.proc is not self._proc or self._state is not State.STARTING:
            return  # a stale report about a process we already let go
        self._ready_mono, self._by_person = self._ctx.clock.monotonic(), False
        now = self._ctx.clock.time()
        self._record(ready_time=now, last_health_check=now)
        self._check_recorded = self._ready_mono
        self._set_health(Health.HEALTHY, "/health answered 200")
        self._set_state(State.RUNNING, f"ready in {msg.ready_ms:.0f} ms")  # STARTING -> RUNNING
        room, self._room = self._room, ()
        said = f"ready (stopped {', '.join(room)} to make room)" if room else "ready"
        ready = Outcome(True, said, ready_ms=msg.ready_ms, pid=self._shown_pid())
        answer(self._waiters.ready, ready)
        self._watch(msg.proc, self._healthcheck(), ready=True)

    def _on_checked(self, msg: m.Checked) -> None:
        if msg.proc is not self._proc or self._state is not State.RUNNING:
            return
        self._checks.record(msg.kind, msg.probe)
        if self._ctx.on_check is not None:
            self._ctx.on_check(self.name, msg.kind, msg.probe.latency_ms / 1000)
        mono, now = self._ctx.clock.monotonic(), self._ctx.clock.time()
        if mono - self._check_recorded >= CHECK_RECORD_S:
            self._check_recorded = mono
            self._ctx.store.update(self.name, last_health_check=now)
        self._publish(last_check=now)  # every check, exact (the record is throttled)
        probe, hc = msg.probe, self._healthcheck()
        if msg.loop_lag:  # the daemon stalled its own loop: the server is not to blame
            why = (
                f"{msg.kind} check not counted: {probe.detail} while the daemon's own event "
                f"loop was stalled for {msg.loop_lag:.1f}s (the daemon's fault, not the server's)"
            )
            health = self._health.value
            self._ctx.bus.emit(self.name, EventKind.HEALTH, health, health, why)
            return
        if probe.ok:
            if msg.final:
                self._misses = 0
                self._set_health(Health.HEALTHY, probe.detail)
            return
        self._misses += 1
        self._set_health(Health.UNHEALTHY, f"{probe.detail} ({self._misses}/{hc.retries})")
        # A remote server is not ours to stop: it stays running, out of the routes while
        # unhealthy, and healthy again when it answers (issue 13).
        if self._misses >= hc.retries and not self._remote:
            self._fail_stop(f"health check failed {self._misses} times: {probe.detail}")

    # -- failures ----------------------------------------------------------------------

    def _on_not_ready(self, msg: m.NotReady) -> None:
        if msg.proc is self._proc and self._state is State.STARTING:
            self._fail_stop(msg.reason)

    def _fail_stop(self, reason: str) -> None:
        """Stop a server that failed its checks (presumed hung: it gets as long to honour
        SIGTERM as one check may take, not a requested stop's grace), then fail it."""
        self._failing = (reason, self._state is State.RUNNING)
        grace = STOP_GRACE_S
        if self._loaded is not None:
            cfg = self._loaded.config
            grace = min(cfg.server.stop_timeout, cfg.healthcheck.timeout)
        self._begin_stop(f"unhealthy: {reason}", grace=grace)

    def _on_exited(self, msg: m.Exited) -> None:
        if msg.proc is not self._proc or self._state is State.STOPPING:
            return  # let go already, or a stop in progress will report it
        proc, self._proc = msg.proc, None
        proc.kill()  # anything left in its group goes with it
        status = proc.reap()
        self._record(pid=None, exit_code=status.code, exit_signal=status.signal)
        self._ctx.bus.emit(self.name, EventKind.EXIT, None, None, status.describe())
        when = "during start" if self._state is State.STARTING else "unexpectedly"
        why = f"{when}: {status.describe()}"
        self._fail(why, self._stderr_tail(), was_running=self._state is State.RUNNING)

    def _fail(self, reason: str, tail: list[str], *, was_running: bool) -> None:
        self._cancel_task("ready")
        self._cancel_task("monitor")
        ran_for = self._ctx.clock.monotonic() - self._ready_mono if was_running else 0.0
        # An adopted server whose config no longer loads gets the default policy: its
        # restart is tried, and refused with the config's error shown (issue 10).
        policy = self._loaded.config.restart_policy if self._loaded else RestartPolicy()
        decision = after_failure(
            policy,
            self._failures,
            was_running=was_running,
            ran_for=ran_for,
            reason=reason,
            requested=self._by_person,
        )
        self._failures = decision.failures
        self._set_health(Health.UNHEALTHY if was_running else Health.ERROR, reason)
        self._record(last_error=decision.reason if decision.state is State.FATAL else reason)
        failed = Outcome(False, reason, error=ErrorCode.START_FAILED, stderr_tail=tail)
        answer(self._waiters.ready, failed)
        self._set_state(decision.state, decision.reason)  # -> BACKOFF / EXITED / FATAL
        if decision.state is State.BACKOFF:
            self._backoff_gen += 1
            if decision.delay <= 0:  # the first failure after a healthy run: at once
                self._on_backoff_done(m.BackoffDone(self._backoff_gen))
                return
            timer = watch.backoff_timer(
                decision.delay, self._backoff_gen, self._ctx.clock, self.post
            )
            self._spawn_task("backoff", timer)

    def _on_backoff_done(self, msg: m.BackoffDone) -> None:
        if msg.generation != self._backoff_gen:
            return
        if self._state is State.BACKOFF and self._desired is Desired.RUNNING:
            self._restart_count += 1
            self._record(restart_count=self._restart_count)
            self._begin_start(auto=True, reason="restart")

    # -- daemon start ------------------------------------------------------------------

    def adopt_from(self, row: InstanceRecord) -> None:
        """Take back a server that kept running while the daemon was away (actor/adopt.py)."""
        adopted = adopt_recorded(self._ctx, self.name, row)
        if adopted is not None:
            self._proc, self._loaded, self._url, self._stderr_path = adopted
            self._publish()

    def _on_resume(self, msg: m.Resume) -> None:
        """Converge after a daemon start: watch adopted servers, restart dead ones."""
        if self._proc is not None:
            claim = held_claim(self.name, self.snapshot, self._loaded)
            self._ctx.scheduler.request(claim, lambda _a: None)  # it holds it
            if self._state is State.STOPPING:  # it was being stopped: finish the stop
                self._spawn_task("exit", watch.watch_exit(self._proc, self.post))
                self._spawn_task(
                    "stop", watch.stop_process(self._proc, self._grace(), "down", self.post)
                )
                return
            if self._state is State.RUNNING:
                self._ready_mono = self._ctx.clock.monotonic()
            self._watch(self._proc, self._healthcheck(), ready=self._state is State.RUNNING)
            return
        if self._state in ALIVE:
            # The server died while no daemon watched it: reconcile the record.
            self._record(pid=None)
            why = "process ended while the daemon was down"
            if self.snapshot.backend == "remote":
                # nothing ended: the remote server is checked again (a new run's handle)
                why = "the daemon restarted: the remote server is checked again"
            else:
                self._ctx.bus.emit(
                    self.name, EventKind.EXIT, self._state.value, State.EXITED.value, why
                )
            self._set_health(Health.UNKNOWN, why)
            self._set_state(State.EXITED, why)  # STARTING/RUNNING/STOPPING -> EXITED
        if msg.rebooted:
            if msg.autostart:
                self._on_autostart()
            elif self._desired is Desired.RUNNING:
                # After a reboot only `autostart` instances come back (#3).
                self._set_desired(Desired.STOPPED)
                why = "the machine rebooted and autostart is off"
                self._ctx.bus.emit(self.name, EventKind.NOT_RESTARTED, reason=why)
            return
        if self._desired is Desired.RUNNING and self._state in (State.EXITED, State.BACKOFF):
            self._begin_start(auto=False, reason="restarted: desired running")  # -> STARTING

    def _on_autostart(self) -> None:
        if self._state in (State.STOPPED, State.EXITED, State.FATAL, State.BACKOFF):
            self._ctx.bus.emit(
                self.name, EventKind.AUTOSTART, reason="first daemon start since boot"
            )
            self._cancel_task("backoff")
            self._failures = 0
            self._begin_start(auto=False, reason="autostart")  # -> STARTING
