"""The daemon process: one per home, guarded by a lock, serving the control API.

``llama-orch daemon run`` runs this in the foreground; ``daemon start`` (and any command
that needs the daemon) starts it detached. Its servers run in their own sessions, so
stopping or killing the daemon never stops a server; the next daemon re-adopts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llama_orchestrator.clock import SYSTEM_CLOCK, Clock
from llama_orchestrator.errors import OrchestratorError
from llama_orchestrator.fs import write_atomic
from llama_orchestrator.home import Home

if TYPE_CHECKING:  # the daemon's parts are imported by build (a second daemon exits first)
    import httpx
    from fastapi import FastAPI

    from llama_orchestrator.daemon.actor.context import Launcher
    from llama_orchestrator.daemon.api.metrics_watch import Watches
    from llama_orchestrator.daemon.configs import Configs
    from llama_orchestrator.daemon.events import EventBus
    from llama_orchestrator.daemon.gateway_host import GatewayHost
    from llama_orchestrator.daemon.reload import Reloader, ScanReport
    from llama_orchestrator.daemon.scheduler import Scheduler
    from llama_orchestrator.daemon.supervisor import Supervisor
    from llama_orchestrator.state.db import StateStore


def _quiet_server_class() -> Any:
    import uvicorn

    class QuietServer(uvicorn.Server):
        """uvicorn without its own signal handling: the daemon's loop owns the signals.

        uvicorn would re-raise a captured SIGTERM after ``serve()`` returns, so the process
        would die of it (exit 143) before removing its pid and endpoint files.
        """

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

        def install_signal_handlers(self) -> None:  # older uvicorn
            return

    return QuietServer


def ensure_token(home: Home) -> str:
    """The control API's bearer token, readable by this user only (0600)."""
    try:
        token = home.token_path.read_text().strip()
        if token:
            return token
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError) as e:  # a folder, unreadable, garbage (issue 19)
        why = "not text" if isinstance(e, UnicodeDecodeError) else e.strerror or e
        raise OrchestratorError(
            f"cannot read the control API's token file {home.token_path} ({why}); move it "
            "aside or remove it, and the daemon writes a new one"
        ) from None
    token = secrets.token_urlsafe(32)
    write_atomic(home.token_path, token, mode=0o600)
    return token


def _write_json(path: os.PathLike[str], data: dict[str, object]) -> None:
    try:
        write_atomic(path, json.dumps(data))
    except OSError as e:  # a folder in its place, a read-only state folder (issue 19)
        raise OrchestratorError(
            f"cannot write {os.fspath(path)} ({e.strerror or e}); move it aside or remove "
            "it (the daemon writes it at every start)"
        ) from None


PORT_KEY = "daemon_port"  # the port the last daemon of this home listened on
LOST_KEY = "requests_lost"  # requests in flight when a daemon of this home died, in all
log = logging.getLogger("llama_orchestrator")


def _bind(sock: socket.socket, host: str, port: int, store: Any) -> None:
    """Bind ``port``; with 0, the previous daemon's port when it is free (an open web
    page and its bookmark then find the next daemon), else any free port."""
    if port == 0:
        previous = store.meta_get(PORT_KEY)
        if previous and previous.isdigit():
            try:
                sock.bind((host, int(previous)))
                return
            except OSError:
                pass
    sock.bind((host, port))


def run_daemon(home: Home, host: str = "127.0.0.1", port: int = 0) -> int:
    """Run the daemon in the foreground until SIGTERM/SIGINT or a shutdown request.

    ``llama-orch daemon run`` runs this under its keeper (daemon/keeper.py), which starts
    it again when it dies; ``EXIT_LOCKED`` tells the keeper not to."""
    from filelock import FileLock, Timeout

    from llama_orchestrator.daemon.keeper import EXIT_LOCKED

    try:
        home.ensure()
    except OSError as e:  # home.HomeError: a file where one of its folders goes
        print(f"error: {e}", file=sys.stderr)
        return 2
    lock = FileLock(str(home.daemon_lock_path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"error: a daemon is already running for {home.root}", file=sys.stderr)
        return EXIT_LOCKED
    except OSError as e:  # a folder or a dangling link in its place (issue 19)
        print(
            f"error: cannot take the daemon's lock file {home.daemon_lock_path} "
            f"({e.strerror or e}); move it aside or remove it (no daemon runs while it "
            "cannot be taken)",
            file=sys.stderr,
        )
        return 2
    try:
        return _run(_serve(home, host, port))
    except OrchestratorError as e:  # a file of the home the daemon cannot use: say which
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        for p in (home.daemon_endpoint_path, home.daemon_pid_path):
            try:
                data = json.loads(p.read_text())
                if data.get("pid") == os.getpid():
                    p.unlink()
            except (OSError, ValueError):
                pass
        lock.release()


def _run(main: Coroutine[Any, Any, int]) -> int:
    """Run the daemon on uvloop where it is installed (the gateway's proxy path is faster)."""
    from llama_orchestrator.gateway.loop import new_event_loop

    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            return runner.run(main)
    loop = new_event_loop()  # pragma: no cover - Python 3.10
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(main)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        asyncio.set_event_loop(None)
        loop.close()


@dataclass
class Daemon:
    """Everything a daemon is made of, built in order by :func:`build`."""

    home: Home
    store: StateStore
    bus: EventBus
    configs: Configs
    scheduler: Scheduler
    supervisor: Supervisor
    gateway: GatewayHost
    reloader: Reloader
    app: FastAPI
    watches: Watches

    async def start(self) -> None:
        """Read the configs, take back what runs, then the gateway and the rescans."""
        self.reloader.prime()
        await self.supervisor.boot()
        self._count_lost()  # the ledger was read when built, before any new lease
        await self.gateway.start()
        self.reloader.start()

    async def reload(self) -> ScanReport:
        """Rescan the configs at once (SIGHUP, `llama-orch daemon reload`; issue 11)."""
        return await self.reloader.scan(forced=True)

    async def close(self) -> None:
        """Stop supervising; the servers keep running (instances outlive the daemon)."""
        self.reloader.close()
        await self.gateway.close()
        self.gateway.ledger.close()
        await self.supervisor.close()

    def _count_lost(self) -> None:
        """Requests the previous daemon had in flight when it died never got an answer:
        count them (issue 19, item 3), in /metrics and as an event."""
        from llama_orchestrator.daemon.events import EventKind

        lost = self.gateway.ledger.lost
        before = self.store.meta_get(LOST_KEY) or "0"
        total = (int(before) if before.isdigit() else 0) + lost
        self.watches.lost_requests = total
        if not lost:
            return
        self.store.meta_set(LOST_KEY, str(total))
        why = (
            f"{lost} request(s) in flight were lost when the previous daemon "
            "died; their clients got no answer"
        )
        log.warning("%s", why)
        self.bus.emit("", EventKind.DAEMON, None, "started", why)


def build(
    home: Home,
    store: StateStore,
    token: str,
    *,
    on_shutdown: Callable[[], None] | None = None,
    allowed_hosts: Iterable[str] = (),
    http: httpx.AsyncClient | None = None,
    launcher: Launcher | None = None,
    clock: Clock = SYSTEM_CLOCK,
    boot_time: float | None = None,
    log_check_interval: float | None = None,
    rescan_interval: float | None = None,
) -> Daemon:
    """The daemon's composition root: every part made once, in order, each given what it
    uses through its constructor (tests pass a fake launcher, clock and HTTP transport).

    Two parts need each other, and meet through a seam made first: the scheduler's seats
    count the requests waiting in the gateway, whose host configures the scheduler
    (``GatewayQueues``: the gateway that listens, once one does); and the actors table,
    which the supervisor fills and the seats read."""
    import httpx

    from llama_orchestrator.daemon.actor.context import ActorContext, ProcessLauncher
    from llama_orchestrator.daemon.actor.handlers import InstanceActor
    from llama_orchestrator.daemon.api.app import create_app
    from llama_orchestrator.daemon.api.metrics_watch import LoadWatch, Watches
    from llama_orchestrator.daemon.configs import Configs
    from llama_orchestrator.daemon.events import EventBus
    from llama_orchestrator.daemon.gateway_host import GatewayHost
    from llama_orchestrator.daemon.ledger import InFlightLedger
    from llama_orchestrator.daemon.overheads import Overheads
    from llama_orchestrator.daemon.recorder import Recorder, StoreWriter
    from llama_orchestrator.daemon.reload import RESCAN_S, Reloader
    from llama_orchestrator.daemon.scheduler import Scheduler
    from llama_orchestrator.daemon.seats import ActorSeats, GatewayQueues
    from llama_orchestrator.daemon.supervisor import LOG_CHECK_S, Supervisor

    writer = StoreWriter(store)  # from here on every write is queued (daemon/recorder.py)
    bus = EventBus()
    bus.add_sink(Recorder(store))
    watches = Watches(LoadWatch(clock))  # the metrics counted as things happen
    bus.add_sink(watches.loads)
    actors: dict[str, InstanceActor] = {}
    queues = GatewayQueues()
    seats = ActorSeats(actors, queues.demand)
    overheads = Overheads(store)  # learnt per device, kept in the state database
    scheduler = Scheduler(clock, seats, overheads.mib)
    configs = Configs(home, bus)
    ctx = ActorContext(
        home=home,
        store=store,
        bus=bus,
        http=http or httpx.AsyncClient(trust_env=False),
        scheduler=scheduler,
        configs=configs,
        launcher=launcher or ProcessLauncher(),
        clock=clock,
        on_check=watches.checks.observe,
        overheads=overheads,
    )
    housekeeping = LOG_CHECK_S if log_check_interval is None else log_check_interval
    sup = Supervisor(ctx, actors, writer, boot_time=boot_time, log_check_interval=housekeeping)
    gateway = GatewayHost(sup, seats, queues, watches, InFlightLedger(home.state_dir / "in_flight"))
    reloader = Reloader(
        sup,
        on_gateway=gateway.reload,
        on_routes=gateway.routes_changed,
        interval=RESCAN_S if rescan_interval is None else rescan_interval,
    )
    app = create_app(
        sup,
        token,
        on_shutdown=on_shutdown,
        gateway_status=gateway.status,
        gateway_host=gateway,
        rescan=lambda: reloader.scan(forced=True),
        allowed_hosts=allowed_hosts,
    )
    return Daemon(home, store, bus, configs, scheduler, sup, gateway, reloader, app, watches)


class _SignalQueue:
    """Signal handlers only record the signal; the daemon's loop acts on it."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[int] = asyncio.Queue()

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        wanted = [signal.SIGTERM, signal.SIGINT]
        if hasattr(signal, "SIGHUP"):
            wanted.append(signal.SIGHUP)
        for sig in wanted:
            try:
                loop.add_signal_handler(sig, self.queue.put_nowait, sig)
            except (NotImplementedError, RuntimeError):  # Windows: no loop signal handlers
                signal.signal(
                    sig, lambda s, _f: loop.call_soon_threadsafe(self.queue.put_nowait, s)
                )


async def _handle_signals(
    signals: _SignalQueue, server: Any, daemon: Daemon, log: logging.Logger
) -> None:
    """TERM/INT: stop serving, leave the servers running; a second one forces the exit.
    HUP: reload the configs."""
    from llama_orchestrator.daemon.events import EventKind

    stopping = False
    reloads: set[asyncio.Task[Any]] = set()  # held, so a running rescan is not collected
    while True:
        sig = await signals.queue.get()
        if hasattr(signal, "SIGHUP") and sig == signal.SIGHUP:
            log.info("SIGHUP: reloading configs")
            task = asyncio.get_running_loop().create_task(daemon.reload())
            reloads.add(task)
            task.add_done_callback(reloads.discard)
            continue
        name = signal.Signals(sig).name
        if stopping:
            log.warning("%s again: exiting now", name)
            server.force_exit = True
            continue
        stopping = True
        log.info("%s: stopping the daemon (servers keep running)", name)
        daemon.bus.emit(
            "", EventKind.DAEMON, None, "stopping", f"{name}: the daemon stops"
        )  # ends /v1/events
        server.should_exit = True


async def _serve(home: Home, host: str, port: int) -> int:
    import psutil
    import uvicorn

    from llama_orchestrator.state.recover import open_state

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    token = ensure_token(home)
    store, recovered = open_state(home.db_path)  # a garbage file is moved aside (issue 19)
    signals = _SignalQueue()

    def request_exit() -> None:  # the shutdown endpoint takes the path of SIGTERM
        signals.queue.put_nowait(signal.SIGTERM)

    from llama_orchestrator.web.auth import ALLOWED_HOSTS_ENV, allowed_hosts_from_env

    allowed = allowed_hosts_from_env(os.environ.get(ALLOWED_HOSTS_ENV))
    daemon = build(home, store, token, on_shutdown=request_exit, allowed_hosts=allowed)
    if recovered:
        from llama_orchestrator.daemon.events import EventKind

        log.warning("%s", recovered)
        daemon.bus.emit("", EventKind.DAEMON, None, "started", recovered)
    await daemon.start()

    # IPPROTO_TCP, not 0: asyncio only turns on TCP_NODELAY for an explicit TCP socket,
    # and without it every second request on a connection stalls ~40 ms (delayed ACK).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    _bind(sock, host, port, store)
    bound_port = sock.getsockname()[1]
    store.meta_set(PORT_KEY, str(bound_port))

    config = uvicorn.Config(daemon.app, log_level="warning", access_log=False, lifespan="off")
    server = _quiet_server_class()(config)
    signals.install(asyncio.get_running_loop())
    handler = asyncio.get_running_loop().create_task(_handle_signals(signals, server, daemon, log))
    me = psutil.Process()
    from llama_orchestrator.client.control import proc_start_ticks

    ident = {
        "pid": me.pid,
        "create_time": me.create_time(),
        "start_ticks": proc_start_ticks(me.pid),  # Linux: lets `ps` skip importing psutil
    }
    _write_json(home.daemon_pid_path, ident)
    _write_json(
        home.daemon_endpoint_path,
        {**ident, "url": f"http://{host}:{bound_port}", "started_at": time.time()},
    )
    log.info("daemon %s listening on %s:%s for %s", me.pid, host, bound_port, home.root)
    try:
        await server.serve(sockets=[sock])
    finally:
        handler.cancel()
        await daemon.close()
        store.close()
    return 0
