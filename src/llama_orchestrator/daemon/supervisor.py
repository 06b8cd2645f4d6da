"""The supervisor: owns one actor per instance (daemon/actor.py) and the daemon-wide work.

It creates the actors, re-adopts servers at daemon start (and starts ``autostart``
instances on the first start since boot), rotates running servers' logs, and fans every
event out to the state store and any listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import httpx

from llama_orchestrator.config.loader import ConfigError, UnknownInstance, load_instance
from llama_orchestrator.daemon.actor import LOG_CHECK_S, InstanceActor
from llama_orchestrator.engine.process import rotate_live
from llama_orchestrator.home import Home
from llama_orchestrator.state.db import StateStore

log = logging.getLogger("llama_orchestrator.supervisor")

Listener = Callable[[str, str, str | None, str | None, str | None], None]


class Supervisor:
    def __init__(
        self,
        home: Home,
        store: StateStore,
        http: httpx.AsyncClient | None = None,
        *,
        boot_time: float | None = None,
        log_check_interval: float = LOG_CHECK_S,
    ) -> None:
        self.home = home
        self.store = store
        self.http = http or httpx.AsyncClient(trust_env=False)
        self.actors: dict[str, InstanceActor] = {}
        self.listeners: list[Listener] = []
        self.boot_time = boot_time  # None: ask the OS (tests inject one to simulate a reboot)
        self.log_check_interval = log_check_interval
        self._background: list[asyncio.Task[None]] = []

    def emit(
        self, name: str, kind: str, old: str | None, new: str | None, reason: str | None
    ) -> None:
        self.store.add_event(name, kind, old, new, reason)
        for listener in self.listeners:
            listener(name, kind, old, new, reason)

    def actor(self, name: str) -> InstanceActor:
        actor = self.actors.get(name)
        if actor is None:
            if not self.home.config_path(name).is_file():
                raise UnknownInstance(name, self.home.instance_names())
            actor = InstanceActor(name, self, self.store.get(name))
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
        for name in self.home.instance_names():
            with contextlib.suppress(ConfigError, UnknownInstance):
                if load_instance(self.home, name).config.autostart:
                    names.add(name)
        return names

    async def boot(self) -> None:
        """Re-adopt what still runs and restart what should run but died.

        On the first daemon start since the machine booted, the servers of the previous
        boot are gone: only instances with ``autostart`` are started then.
        """
        rebooted = self._first_start_since_boot()
        autostart = self._autostart_names() if rebooted else set()
        for row in self.store.all():
            name = row["name"]
            actor = InstanceActor(name, self, row)
            self.actors[name] = actor
            actor.start_loop()
            actor.adopt_from(row, rebooted=rebooted, autostart=name in autostart)
        for name in sorted(autostart - set(self.actors)):
            self.actor(name).inbox.put_nowait(("autostart",))
        self._background.append(asyncio.get_running_loop().create_task(self._rotate_logs()))

    async def _rotate_logs(self) -> None:
        """Rotate running servers' logs past ``logs.max_size_mb`` without stopping them."""
        from llama_orchestrator.engine.command import log_paths

        while True:
            await asyncio.sleep(self.log_check_interval)
            for actor in list(self.actors.values()):
                loaded = actor.loaded
                if actor.proc is None or loaded is None:
                    continue
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
                        self.emit(actor.name, "log_rotated", None, None, str(path))

    async def close(self) -> None:
        """Stop supervising. The servers keep running: instances outlive the daemon."""
        for task in self._background:
            task.cancel()
        for actor in self.actors.values():
            for task in actor._tasks.values():
                task.cancel()
            if actor._runner is not None:
                actor._runner.cancel()
        await self.http.aclose()
