"""The supervisor: owns one actor per instance (daemon/actor/handlers.py) and the daemon-wide work.

It is given the actors' context (state store, event bus, HTTP client, launcher, clock,
scheduler, configs) by the composition root (daemon/server.py ``build``), creates the
actors, re-adopts servers at daemon start (and starts ``autostart`` instances on the
first start since boot), and every few seconds checks the state database and rotates
running servers' logs. Every event goes through the bus; the SQLite recorder is its
first sink.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from llama_orchestrator.config.loader import LoadedConfig, UnknownInstance
from llama_orchestrator.daemon.actor import messages as m
from llama_orchestrator.daemon.actor.context import ActorContext
from llama_orchestrator.daemon.actor.handlers import InstanceActor
from llama_orchestrator.daemon.events import EventKind
from llama_orchestrator.daemon.recorder import StoreWriter
from llama_orchestrator.engine.command import log_paths
from llama_orchestrator.logs.rotate import rotate_live
from llama_orchestrator.state.records import InstanceRecord

log = logging.getLogger("llama_orchestrator.supervisor")

LOG_CHECK_S = 2.0  # how often running servers' log sizes are checked for rotation


class Supervisor:
    def __init__(
        self,
        ctx: ActorContext,
        actors: dict[str, InstanceActor],
        writer: StoreWriter,
        *,
        boot_time: float | None = None,
        log_check_interval: float = LOG_CHECK_S,
    ) -> None:
        self.ctx = ctx
        self.home, self.store, self.bus = ctx.home, ctx.store, ctx.bus
        self.scheduler, self.configs = ctx.scheduler, ctx.configs
        # Every write of the store goes through the writer's task, off the loop the
        # gateway shares (issue 17); its own reads see the writes at once.
        self.writer = writer
        # The instances' actors by name: added and removed here only; the scheduler's
        # seats read the same table (daemon/seats.py), everyone else asks ``actor``.
        self.actors = actors
        self.boot_time = boot_time  # None: ask the OS (tests inject one to simulate a reboot)
        self.log_check_interval = log_check_interval
        self._background: list[asyncio.Task[None]] = []

    def actor(self, name: str) -> InstanceActor:
        """The instance's actor: one with a config, or a record whose config was removed
        (it stays controllable: `down`, `rm`)."""
        actor = self.actors.get(name)
        if actor is None:
            # Every record got its actor at boot: a name without one needs a config (read
            # now, should its folder be new).
            if name not in self.configs and self.configs.refresh(name) is None:
                raise UnknownInstance(name, self.home.instance_names())
            actor = self._new_actor(name, None)
        return actor

    def remove(self, name: str, *, logs: bool = False) -> list[str]:
        """Forget a stopped instance: its folder, its records and (with ``logs``) its logs.

        Returns what was removed, for the reply.
        """
        import shutil

        removed: list[str] = []
        actor = self.actors.pop(name, None)
        log_files: list[Path] = []
        loaded = self.configs.refresh(name)
        if isinstance(loaded, LoadedConfig):
            log_files = [
                p
                for base in log_paths(loaded, self.home.root)
                for p in (base, *base.parent.glob(base.name + ".*"))
            ]
        if actor is not None:
            actor.cancel_tasks()
        folder = self.home.instance_dir(name)
        if folder.exists():
            shutil.rmtree(folder)
            removed.append(str(folder))
        self.store.delete(name, events=True)
        self.configs.forget(name)  # after the folder: nothing is known of it any more
        removed.append("its records")
        if logs:
            for path in log_files:
                with contextlib.suppress(OSError):
                    path.unlink()
            default = self.home.logs_dir / name
            if default.is_dir():
                shutil.rmtree(default, ignore_errors=True)
            removed.append("its logs")
        return removed

    def _new_actor(self, name: str, record: InstanceRecord | None) -> InstanceActor:
        actor = InstanceActor(name, self.ctx, record)
        self.actors[name] = actor
        actor.start_loop()
        return actor

    def _first_start_since_boot(self) -> bool:
        """True when no daemon of this home ran since the machine booted."""
        import psutil

        booted = psutil.boot_time() if self.boot_time is None else self.boot_time
        seen = self.store.meta_get("boot_time")
        self.store.meta_set("boot_time", repr(booted))
        return seen is None or abs(float(seen) - booted) > 1.0

    def _autostart_names(self) -> set[str]:
        names = set()
        for name in self.configs.names():
            loaded = self.configs.valid(name)
            if loaded is not None and loaded.config.autostart:
                names.add(name)
        return names

    async def boot(self) -> None:
        """Re-adopt what still runs and restart what should run but died.

        On the first daemon start since the machine booted, the servers of the previous
        boot are gone: only instances with ``autostart`` are started then. The configs
        were read already (daemon/reload.py ``prime``).
        """
        self.writer.start()
        self.scheduler.start()
        self._find_lost_servers()
        rebooted = self._first_start_since_boot()
        autostart = self._autostart_names() if rebooted else set()
        for row in self.store.all():
            actor = self._new_actor(row.name, row)
            actor.adopt_from(row)
            actor.post(m.Resume(rebooted, row.name in autostart))
        for name in sorted(autostart - set(self.actors)):
            self.actor(name).post(m.Autostart())
        self._background.append(asyncio.get_running_loop().create_task(self._housekeeping()))

    def _find_lost_servers(self) -> None:
        """Servers that carry this home's marker are ours: one that no record holds (the
        state database was deleted while servers ran, or the daemon ended between a
        spawn and its record: killed, or stopped while the spawn ran in its thread) is
        recorded now, so it is re-adopted, not taken for a stranger holding our port
        and never left behind (issue 10)."""
        from llama_orchestrator.engine.process import find_marked

        for name, ident in sorted(find_marked(self.home.root).items()):
            row = self.store.get(name)
            if row is not None and row.pid == ident.pid:
                continue
            argv = ident.cmdline
            flag = {a: argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("--host", "--port")}
            self.store.update(
                name,
                status="running",
                desired="running" if row is None else row.desired,
                health="unknown",
                pid=ident.pid,
                pid_create_time=ident.create_time,
                cmdline=argv,
                host=flag.get("--host"),
                port=int(flag["--port"]) if flag.get("--port", "").isdigit() else None,
            )
            lost = "had lost it" if row is None else "had no record of this run"
            why = f"pid {ident.pid} carries this home's marker; the state database {lost}"
            self.bus.emit(name, EventKind.DAEMON, None, str(ident.pid), why)

    async def _housekeeping(self) -> None:
        """Every few seconds: the state database still there, running servers' logs
        (the configs are the reloader's, daemon/reload.py)."""
        while True:
            await asyncio.sleep(self.log_check_interval)
            self._check_store()
            await self._rotate_logs()

    def _check_store(self) -> None:
        """A state database deleted or replaced under the daemon is written again from
        what the daemon knows, so no running server is left without a record (issue 10)."""
        try:
            recreated = self.store.recreate_if_lost()
        except Exception as e:  # the folder may be unwritable now: say so, keep going
            log.error("the state database %s cannot be recreated: %s", self.store.path, e)
            return
        if recreated:
            why = f"{self.store.path} was deleted or replaced; recreated from the daemon's memory"
            log.warning(why)
            self.bus.emit("", EventKind.DAEMON, None, None, why)

    async def _rotate_logs(self) -> None:
        """Rotate running servers' logs past ``logs.max_size_mb`` without stopping them."""
        for actor in list(self.actors.values()):
            snap = actor.snapshot
            loaded = snap.loaded
            if not snap.attached or loaded is None or snap.remote:
                continue  # a remote instance writes no log here
            limit = loaded.config.logs.max_size_mb * 1024 * 1024
            for path in log_paths(loaded, self.home.root):
                try:
                    done = await asyncio.to_thread(
                        rotate_live, path, limit, loaded.config.logs.rotation
                    )
                except OSError as e:
                    log.warning("%s: cannot rotate %s: %s", actor.name, path, e)
                    continue
                if done:
                    self.bus.emit(actor.name, EventKind.LOG_ROTATED, None, None, str(path))

    async def close(self) -> None:
        """Stop supervising. The servers keep running: instances outlive the daemon."""
        for task in self._background:
            task.cancel()
        for actor in self.actors.values():
            actor.cancel_tasks()
        await self.scheduler.close()
        await self.ctx.http.aclose()
        await self.writer.close()  # every write still queued goes to disk

    async def recorded(self) -> None:
        """Return once what was written to the store so far is on disk: the control API
        answers a command after it, so the CLI reading SQLite sees what it did."""
        await self.writer.flushed()
