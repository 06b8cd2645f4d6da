"""One instance's actor: the only code that changes that instance's state.

Commands (start, stop, restart) arrive in its inbox from the control API and are
answered through futures; process exits, readiness, health results and backoff timers
arrive as messages in the same inbox, so nothing ever races on an instance's state.
Desired state (``up`` -> running, ``down`` -> stopped) is recorded, and the actor
converges the observed process onto it, restarting with exponential backoff on failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llama_orchestrator.config.loader import (
    ConfigError,
    LoadedConfig,
    UnknownInstance,
    load_instance,
)
from llama_orchestrator.config.modelfile import model_file_problem
from llama_orchestrator.config.ports import port_holder
from llama_orchestrator.engine.binary import BinaryError, resolve_binary
from llama_orchestrator.engine.command import base_url, device_label, launch_spec
from llama_orchestrator.engine.health import Probe, probe_completion, probe_health
from llama_orchestrator.engine.process import (
    ServerProcess,
    adopt,
    rotate_if_needed,
    spawn,
    tail_lines,
)
from llama_orchestrator.engine.states import ALIVE, Desired, Health, State, check_transition

if TYPE_CHECKING:
    from llama_orchestrator.daemon.supervisor import Supervisor

log = logging.getLogger("llama_orchestrator.supervisor")

STOP_GRACE_S = 10.0  # SIGTERM -> SIGKILL when no config says otherwise (server.stop_timeout)
READY_POLL_S = 0.02  # /health polling while a server starts
MIN_READY_DEADLINE_S = 5.0
CHECK_HISTORY = 20  # health checks kept per instance for `llama-orch health`
LOG_CHECK_S = 2.0  # how often running servers' log sizes are checked for rotation


@dataclass
class Outcome:
    """The reply to a command: what happened, in words a person and a script can use."""

    ok: bool
    message: str
    error: str | None = None  # machine code: config_invalid, model, port_in_use, ...
    ready_ms: float | None = None
    stderr_tail: list[str] = field(default_factory=list)
    problems: list[dict[str, Any]] = field(default_factory=list)
    pid: int | None = None


def backoff_delay(failures: int, base: float, multiplier: float, cap: float) -> float:
    """No wait for the first failure after a healthy run; then base * multiplier^(n-2)."""
    if failures <= 1:
        return 0.0
    try:
        delay = base * multiplier ** (failures - 2)
    except OverflowError:  # a long crash loop with a big multiplier: the cap rules
        return float(cap)
    return float(min(cap, delay))


class InstanceActor:
    def __init__(self, name: str, sup: Supervisor, row: dict[str, Any] | None) -> None:
        self.name = name
        self.sup = sup
        row = row or {}
        # The initial state is read from the record as-is: it is where we left off.
        self.state = State(row.get("status") or State.STOPPED.value)
        self.desired = Desired(row.get("desired") or Desired.STOPPED.value)
        self.health = Health(row.get("health") or Health.UNKNOWN.value)
        self.restart_count = int(row.get("restart_count") or 0)
        self.failures = 0
        self.proc: ServerProcess | None = None
        self.loaded: LoadedConfig | None = None
        self.waiters: list[asyncio.Future[Outcome]] = []
        self.inbox: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._ready_mono = 0.0
        self.checks: deque[dict[str, Any]] = deque(maxlen=CHECK_HISTORY)  # bounded
        self.misses = 0  # consecutive failed checks
        self._stderr_path: Any = None
        self._runner: asyncio.Task[None] | None = None

    # -- plumbing ----------------------------------------------------------------------

    def start_loop(self) -> None:
        self._runner = asyncio.get_running_loop().create_task(
            self._run(), name=f"actor-{self.name}"
        )

    async def request(self, command: str) -> Outcome:
        fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        await self.inbox.put((command, fut))
        return await fut

    async def _run(self) -> None:
        while True:
            msg = await self.inbox.get()
            try:
                await self._dispatch(msg)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # keep the actor alive; the caller gets the reason
                log.exception("%s: error handling %s", self.name, msg[0])
                fut = msg[1] if len(msg) > 1 and isinstance(msg[1], asyncio.Future) else None
                if fut is not None and not fut.done():
                    fut.set_result(Outcome(False, f"internal error: {e}", error="internal"))

    async def _dispatch(self, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "start":
            await self._cmd_start(msg[1])
        elif kind == "stop":
            msg[1].set_result(await self._cmd_stop())
        elif kind == "restart":
            await self._cmd_stop()
            await self._cmd_start(msg[1])
        elif kind == "exited":
            await self._on_exited(msg[1])
        elif kind == "loading":
            if msg[1] is self.proc and self.state is State.STARTING:
                self._set_health(Health.LOADING, "/health answered 503 (loading the model)")
        elif kind == "ready":
            self._on_ready(msg[1], msg[2])
        elif kind == "not_ready" or kind == "unhealthy":
            await self._on_failed_probe(msg[1], msg[2])
        elif kind == "backoff_done":
            if self.state is State.BACKOFF and self.desired is Desired.RUNNING:
                self.restart_count += 1
                self.sup.store.update(self.name, restart_count=self.restart_count)
                await self._launch(None, auto=True)
        elif kind == "adopted_check":
            await self._resume(msg[1], msg[2])
        elif kind == "autostart":
            await self._autostart()

    def _set_state(self, new: State, reason: str) -> None:
        """The one place a state changes: validated, recorded, announced."""
        old = self.state
        check_transition(old, new)
        self.state = new
        self.sup.store.update(self.name, status=new.value)
        self.sup.emit(self.name, "state", old.value, new.value, reason)

    def _set_health(self, new: Health, reason: str) -> None:
        if new is self.health:
            return
        old = self.health
        self.health = new
        self.sup.store.update(self.name, health=new.value)
        self.sup.emit(self.name, "health", old.value, new.value, reason)

    def _set_desired(self, desired: Desired) -> None:
        if desired is not self.desired:
            self.desired = desired
            self.sup.store.update(self.name, desired=desired.value)

    def _spawn_task(self, key: str, coro: Any) -> None:
        self._cancel_task(key)
        self._tasks[key] = asyncio.get_running_loop().create_task(coro)

    def _cancel_task(self, key: str) -> None:
        task = self._tasks.pop(key, None)
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()

    def _reply_waiters(self, outcome: Outcome) -> None:
        waiters, self.waiters = self.waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(outcome)

    # -- commands ----------------------------------------------------------------------

    async def _cmd_start(self, fut: asyncio.Future[Outcome]) -> None:
        if self.state is State.RUNNING and self.proc is not None:
            self._set_desired(Desired.RUNNING)
            message = "already running"
            with contextlib.suppress(ConfigError, UnknownInstance):
                current = load_instance(self.sup.home, self.name)
                if self.loaded is not None and current.raw_hash != self.loaded.raw_hash:
                    message += f" (its config changed since: `llama-orch restart {self.name}`)"
            fut.set_result(Outcome(True, message, pid=self.proc.pid))
            return
        if self.state is State.STARTING:
            self.waiters.append(fut)  # a concurrent `up` joins the start in progress
            return
        self._cancel_task("backoff")
        self.failures = 0
        await self._launch(fut, auto=False)

    async def _cmd_stop(self) -> Outcome:
        self._set_desired(Desired.STOPPED)
        self._cancel_task("backoff")
        if self.state is State.BACKOFF:
            self._set_state(State.STOPPED, "down requested during backoff")  # BACKOFF -> STOPPED
            return Outcome(True, "stopped")
        if self.state in (State.EXITED, State.FATAL):
            self._set_state(State.STOPPED, "down requested")  # EXITED/FATAL -> STOPPED
            return Outcome(True, "already stopped")
        if self.proc is None or self.state is State.STOPPED:
            return Outcome(True, "already stopped")
        was_starting = self.state is State.STARTING
        self._set_state(State.STOPPING, "down requested")  # STARTING/RUNNING -> STOPPING
        self._cancel_task("ready")
        self._cancel_task("monitor")
        if was_starting:
            self._reply_waiters(
                Outcome(False, "stopped by `down` while it was still loading", error="stopped")
            )
        proc, self.proc = self.proc, None
        grace = self.loaded.config.server.stop_timeout if self.loaded else STOP_GRACE_S
        status = await proc.stop(grace)
        self.sup.store.update(self.name, pid=None, exit_code=status.code, exit_signal=status.signal)
        self._set_health(Health.UNKNOWN, "stopped")
        self._set_state(State.STOPPED, f"stopped ({status.describe()})")  # STOPPING -> STOPPED
        return Outcome(True, "stopped")

    # -- starting ----------------------------------------------------------------------

    def _preflight(self) -> tuple[LoadedConfig | None, Outcome | None]:
        """Everything that can be checked before spawning, as a refusal with a reason."""
        try:
            loaded = load_instance(self.sup.home, self.name)
        except UnknownInstance as e:
            return None, Outcome(False, str(e), error="unknown_instance")
        except ConfigError as e:
            return None, Outcome(
                False,
                f"invalid config:\n{e}",
                error="config_invalid",
                problems=[p.to_dict() for p in e.problems],
            )
        problem = model_file_problem(loaded.model_path)
        if problem:
            return loaded, Outcome(
                False, f"{loaded.path}: model.path: {problem} ({loaded.model_path})", error="model"
            )
        server = loaded.config.server
        holder = port_holder(server.host, server.port)
        if holder is not None:
            return loaded, Outcome(
                False,
                f"port {server.port} is already in use by {holder}; "
                f"choose another server.port in {loaded.path}",
                error="port_in_use",
            )
        return loaded, None

    async def _launch(
        self, fut: asyncio.Future[Outcome] | None, *, auto: bool, reason: str = "up requested"
    ) -> None:
        loaded, refusal = self._preflight()
        if refusal is None and loaded is not None:
            try:
                binary = resolve_binary(
                    loaded.config.binary, self.sup.home, config_dir=loaded.path.parent
                )
            except BinaryError as e:
                refusal = Outcome(False, str(e), error="binary")
        if refusal is not None or loaded is None:
            assert refusal is not None
            self.sup.store.update(self.name, last_error=refusal.message)
            self.sup.emit(self.name, "start_refused", None, None, refusal.message)
            if fut is not None:
                fut.set_result(refusal)
            if auto:  # a restart that cannot even begin counts as a failed attempt
                self._set_state(State.STARTING, "restart")  # BACKOFF -> STARTING
                self._after_failure(refusal.message, [])
            return
        self.loaded = loaded
        cfg = loaded.config
        spec = launch_spec(loaded, binary, self.sup.home.root)
        max_bytes = cfg.logs.max_size_mb * 1024 * 1024
        self._set_desired(Desired.RUNNING)
        self._set_state(State.STARTING, "restart" if auto else reason)  # -> STARTING
        try:
            for path in (spec.stdout, spec.stderr):
                rotate_if_needed(path, max_bytes, cfg.logs.rotation)
            proc = spawn(spec, self.name)
        except OSError as e:
            log_places = {str(p) for p in (spec.stdout, spec.stderr)}
            log_places |= {str(p.parent) for p in (spec.stdout, spec.stderr)}
            if e.filename is not None and str(e.filename) in log_places:
                msg = f"cannot write log file {e.filename}: {e.strerror} (see logs in the config)"
            else:
                msg = f"cannot start {spec.argv[0]}: {e}"
            if fut is not None:
                fut.set_result(Outcome(False, msg, error="spawn"))
            self._after_failure(msg, [])
            return
        self.proc = proc
        self._stderr_path = spec.stderr
        self._set_health(Health.UNKNOWN, "starting")
        self.sup.store.update(
            self.name,
            pid=proc.pid,
            pid_create_time=proc.identity.create_time,
            cmdline=spec.argv,
            host=cfg.server.host,
            port=cfg.server.port,
            backend=cfg.gpu.backend,
            device=device_label(cfg.gpu.backend, cfg.gpu.device_id),
            model=str(loaded.model_path),
            binary=binary.display,
            start_time=time.time(),
            ready_time=None,
            exit_code=None,
            exit_signal=None,
            last_error=None,
            config_hash=loaded.raw_hash,
        )
        self.sup.emit(self.name, "spawned", None, str(proc.pid), " ".join(spec.argv))
        if fut is not None:
            self.waiters.append(fut)
        self._spawn_task("watch", self._watch(proc))
        self._spawn_task("ready", self._await_ready(proc, loaded))
        self._spawn_task("version", self._record_version(binary))

    async def _record_version(self, binary: Any) -> None:
        version = await asyncio.to_thread(binary.version)
        self.sup.store.update(self.name, binary_version=version)

    async def _watch(self, proc: ServerProcess) -> None:
        await proc.wait_exit()
        await self.inbox.put(("exited", proc))

    async def _await_ready(self, proc: ServerProcess, loaded: LoadedConfig) -> None:
        hc = loaded.config.healthcheck
        url = base_url(loaded.config.server.host, loaded.config.server.port)
        t0 = time.monotonic()
        deadline = t0 + max(hc.start_period, MIN_READY_DEADLINE_S)
        loading_seen = False
        while not proc.has_exited():
            probe = await probe_health(self.sup.http, url, hc.path, hc.timeout)
            if probe.ok:
                await self.inbox.put(("ready", proc, (time.monotonic() - t0) * 1000.0))
                return
            if probe.health is Health.LOADING and not loading_seen:
                loading_seen = True
                await self.inbox.put(("loading", proc))
            if time.monotonic() > deadline:
                reason = f"not ready after {hc.start_period:g}s (last check: {probe.detail})"
                await self.inbox.put(("not_ready", proc, reason))
                return
            await asyncio.sleep(READY_POLL_S)

    def _on_ready(self, proc: ServerProcess, ready_ms: float) -> None:
        if proc is not self.proc or self.state is not State.STARTING:
            return  # a stale report about a process we already let go
        self._ready_mono = time.monotonic()
        self.sup.store.update(self.name, ready_time=time.time(), last_health_check=time.time())
        self._set_health(Health.HEALTHY, "/health answered 200")
        self._set_state(State.RUNNING, f"ready in {ready_ms:.0f} ms")  # STARTING -> RUNNING
        self._reply_waiters(Outcome(True, "ready", ready_ms=ready_ms, pid=proc.pid))
        assert self.loaded is not None
        self._spawn_task("monitor", self._monitor(proc, self.loaded))

    def _record_check(self, kind: str, probe: Probe) -> None:
        self.checks.append(
            {
                "ts": time.time(),
                "kind": kind,
                "ok": probe.ok,
                "health": probe.health.value,
                "status_code": probe.status_code,
                "latency_ms": round(probe.latency_ms, 2),
                "detail": probe.detail,
            }
        )

    async def _monitor(self, proc: ServerProcess, loaded: LoadedConfig) -> None:
        """Check every ``interval``; ``retries`` failures in a row mean a restart.

        Each check is a GET of the health path; with ``probe: completion`` every
        ``probe_every``-th check also asks for a one-token completion, so a server that
        answers /health but cannot infer is caught too.
        """
        hc = loaded.config.healthcheck
        url = base_url(loaded.config.server.host, loaded.config.server.port)
        self.misses = 0
        n = 0
        due = time.monotonic() + hc.interval
        while not proc.has_exited():
            # A fixed cadence: a check that times out does not push the next one back,
            # so a hang is caught within interval x retries + timeout.
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            due = max(due + hc.interval, time.monotonic())
            n += 1
            probe = await probe_health(self.sup.http, url, hc.path, hc.timeout)
            self._record_check("health", probe)
            if probe.ok and hc.probe == "completion" and n % hc.probe_every == 0:
                probe = await probe_completion(self.sup.http, url, hc.timeout)
                self._record_check("completion", probe)
            self.sup.store.update(self.name, last_health_check=time.time())
            if probe.ok:
                self.misses = 0
                self._set_health(Health.HEALTHY, probe.detail)
                continue
            self.misses += 1
            self._set_health(Health.UNHEALTHY, f"{probe.detail} ({self.misses}/{hc.retries})")
            if self.misses >= hc.retries:
                await self.inbox.put(
                    ("unhealthy", proc, f"health check failed {self.misses} times: {probe.detail}")
                )
                return

    # -- failures ----------------------------------------------------------------------

    async def _on_exited(self, proc: ServerProcess) -> None:
        if proc is not self.proc:
            return  # already stopped on purpose
        self.proc = None
        proc.kill()  # anything left in its group goes with it
        status = proc.reap()
        self.sup.store.update(self.name, pid=None, exit_code=status.code, exit_signal=status.signal)
        self.sup.emit(self.name, "exit", None, None, status.describe())
        tail = tail_lines(self._stderr_path, 15) if self._stderr_path else []
        during = "during start" if self.state is State.STARTING else "unexpectedly"
        self._after_failure(f"{during}: {status.describe()}", tail)

    async def _on_failed_probe(self, proc: ServerProcess, reason: str) -> None:
        if proc is not self.proc:
            return
        self.proc = None
        self._cancel_task("monitor")
        # A server that fails its checks is presumed hung: it gets as long to honour
        # SIGTERM as one check may take, not the full grace of a requested stop.
        grace = STOP_GRACE_S
        if self.loaded is not None:
            cfg = self.loaded.config
            grace = min(cfg.server.stop_timeout, cfg.healthcheck.timeout)
        status = await proc.stop(grace)
        self.sup.store.update(self.name, pid=None, exit_code=status.code, exit_signal=status.signal)
        self.sup.emit(self.name, "exit", None, None, f"stopped as unhealthy: {status.describe()}")
        tail = tail_lines(self._stderr_path, 15) if self._stderr_path else []
        self._after_failure(reason, tail)

    def _after_failure(self, reason: str, tail: list[str]) -> None:
        self._cancel_task("ready")
        self._cancel_task("monitor")
        was_running = self.state is State.RUNNING
        stable_after = self.loaded.config.restart_policy.stable_after if self.loaded else 10.0
        if was_running and time.monotonic() - self._ready_mono >= stable_after:
            self.failures = 0
        self.failures += 1
        self._set_health(Health.ERROR if not was_running else Health.UNHEALTHY, reason)
        self.sup.store.update(self.name, last_error=reason)
        self._reply_waiters(Outcome(False, reason, error="start_failed", stderr_tail=tail))
        policy = self.loaded.config.restart_policy if self.loaded else None
        if policy is None or not policy.enabled:
            # RUNNING -> EXITED / STARTING -> FATAL
            self._set_state(State.EXITED if was_running else State.FATAL, reason)
            return
        if self.failures > policy.max_retries:
            final = f"{reason}; gave up after {policy.max_retries} restart(s)"
            self.sup.store.update(self.name, last_error=final)
            self._set_state(State.FATAL, final)  # STARTING/RUNNING -> FATAL
            return
        delay = backoff_delay(
            self.failures, policy.backoff_base, policy.backoff_multiplier, policy.backoff_max
        )
        self._set_state(State.BACKOFF, f"{reason}; restarting in {delay:.1f}s")  # -> BACKOFF
        self._spawn_task("backoff", self._backoff(delay))

    async def _backoff(self, delay: float) -> None:
        await asyncio.sleep(delay)
        await self.inbox.put(("backoff_done",))

    # -- daemon restart ----------------------------------------------------------------

    def adopt_from(self, row: dict[str, Any], *, rebooted: bool, autostart: bool) -> None:
        """Take back a server that kept running while the daemon was away."""
        proc = None
        if row.get("pid") and row.get("pid_create_time") and row.get("cmdline"):
            proc = adopt(int(row["pid"]), float(row["pid_create_time"]), list(row["cmdline"]))
        if proc is not None:
            self.proc = proc
            with contextlib.suppress(ConfigError, UnknownInstance):
                self.loaded = load_instance(self.sup.home, self.name)
            self._stderr_path = None
            if self.loaded is not None:
                from llama_orchestrator.engine.command import log_paths

                self._stderr_path = log_paths(self.loaded, self.sup.home.root)[1]
            self.sup.emit(
                self.name, "adopted", None, str(proc.pid), "re-adopted after daemon start"
            )
        self.inbox.put_nowait(("adopted_check", rebooted, autostart))

    async def _resume(self, rebooted: bool, autostart: bool) -> None:
        """Converge after a daemon start: watch adopted servers, restart dead ones."""
        if self.proc is not None:
            if self.loaded is None:
                return
            self._spawn_task("watch", self._watch(self.proc))
            if self.state is State.RUNNING:
                self._ready_mono = time.monotonic()
                self._spawn_task("monitor", self._monitor(self.proc, self.loaded))
            elif self.state is State.STARTING:
                self._spawn_task("ready", self._await_ready(self.proc, self.loaded))
            elif self.state is State.STOPPING:
                await self._cmd_stop()
            return
        if self.state in ALIVE:
            # The server died while no daemon watched it: reconcile the record (no live
            # transition happened that we could have observed).
            self.sup.store.update(
                self.name, pid=None, status=State.EXITED.value, health=Health.UNKNOWN.value
            )
            self.health = Health.UNKNOWN
            self.sup.emit(
                self.name,
                "exit",
                self.state.value,
                State.EXITED.value,
                "process ended while the daemon was down",
            )
            self.state = State.EXITED
        if rebooted:
            if autostart:
                await self._autostart()
            elif self.desired is Desired.RUNNING:
                # After a reboot only `autostart` instances come back (#3).
                self._set_desired(Desired.STOPPED)
                self.sup.emit(
                    self.name,
                    "not_restarted",
                    None,
                    None,
                    "the machine rebooted and autostart is off",
                )
            return
        if self.desired is Desired.RUNNING and self.state in (State.EXITED, State.BACKOFF):
            await self._launch(None, auto=False, reason="restarted: desired running")  # -> STARTING

    async def _autostart(self) -> None:
        if self.state in (State.STOPPED, State.EXITED, State.FATAL, State.BACKOFF):
            self.sup.emit(self.name, "autostart", None, None, "first daemon start since boot")
            self._cancel_task("backoff")
            self.failures = 0
            await self._launch(None, auto=False, reason="autostart")  # -> STARTING
