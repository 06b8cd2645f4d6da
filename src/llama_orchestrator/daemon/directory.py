"""The daemon's side of the gateway contract (gateway/backend.py): instances as the
gateway sees them, over the supervisor's actors.

A view reads the actor's state and its leases directly (cheap attribute reads on the
same loop) and the instance's config through a small cache keyed by the file's
modification time, so a stopped instance's aliases are known without starting it.
Starting on demand is an ordinary start command to the actor, which joins any start
already in progress: single-flight comes from the actor, not from here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence

from llama_orchestrator.config.loader import (
    ConfigError,
    LoadedConfig,
    UnknownInstance,
    load_instance,
)
from llama_orchestrator.daemon.actor import messages as m
from llama_orchestrator.daemon.actor.handlers import InstanceActor
from llama_orchestrator.daemon.seats import cutoff
from llama_orchestrator.daemon.supervisor import Supervisor
from llama_orchestrator.engine.states import Health, State
from llama_orchestrator.gateway.backend import Endpoint, StartResult

ConfigOf = Callable[[str], "LoadedConfig | None"]


class InstanceView:
    def __init__(self, actor: InstanceActor, config_of: ConfigOf) -> None:
        self._actor = actor
        self._config_of = config_of

    def _config(self) -> LoadedConfig | None:
        return self._config_of(self._actor.name)

    @property
    def name(self) -> str:
        return self._actor.name

    @property
    def aliases(self) -> tuple[str, ...]:
        loaded = self._config()
        return tuple(loaded.config.gateway.aliases) if loaded else ()

    @property
    def on_demand(self) -> bool:
        loaded = self._config()
        return bool(loaded and loaded.config.gateway.on_demand)

    @property
    def slots(self) -> int:
        loaded = self._actor.loaded or self._config()
        return loaded.config.server.parallel if loaded else 1

    @property
    def state(self) -> str:
        return self._actor.state.value

    @property
    def routable(self) -> bool:
        actor = self._actor
        return actor.state is State.RUNNING and actor.health is Health.HEALTHY

    @property
    def in_flight(self) -> int:
        return self._actor.leases.in_flight

    @property
    def last_error(self) -> str | None:
        error = self._actor.ctx.store.record(self.name).last_error
        return str(error) if error else None

    @property
    def context_size(self) -> int | None:
        loaded = self._actor.loaded or self._config()
        return loaded.config.model.context_size if loaded else None

    @property
    def cutoff(self) -> float:
        actor = self._actor
        scheduler = actor.ctx.scheduler
        if scheduler.evicting(actor.name):  # its stop is on the way: nothing more for it
            return -math.inf
        name = actor.name
        return cutoff(actor, scheduler.draining_since(name), scheduler.hold(name))

    def acquire(self) -> Endpoint | None:
        """A lease on the running server, or None when it cannot take a request now."""
        url = self._actor.url if self.routable else None
        return self._actor.leases.acquire(self.name, url)

    def release(self) -> None:
        leases = self._actor.leases
        leases.release()
        if not leases.in_flight:
            self._actor.ctx.scheduler.poke()  # a start waiting for it to drain goes on now

    async def ensure_started(self) -> StartResult:
        outcome = await self._actor.request(
            lambda r: m.Start(r, reason="requested through the gateway", on_demand=True)
        )
        return StartResult(outcome.ok, outcome.message)


class ActorDirectory:
    """Every configured instance, as a stable ``InstanceView`` per name."""

    def __init__(self, sup: Supervisor) -> None:
        self._sup = sup
        self._views: dict[str, InstanceView] = {}
        self._configs: dict[str, tuple[tuple[int, int], LoadedConfig | None]] = {}

    def config(self, name: str) -> LoadedConfig | None:
        """The instance's config as it is on disk now (None when missing or invalid)."""
        path = self._sup.home.config_path(name)
        try:
            st = os.stat(path)
        except OSError:
            return None
        key = (st.st_mtime_ns, st.st_size)
        cached = self._configs.get(name)
        if cached is not None and cached[0] == key:
            return cached[1]
        loaded: LoadedConfig | None
        try:
            loaded = load_instance(self._sup.home, name)
        except (ConfigError, UnknownInstance):
            loaded = None
        self._configs[name] = (key, loaded)
        return loaded

    def get(self, name: str) -> InstanceView | None:
        view = self._views.get(name)
        if view is None:
            try:
                actor = self._sup.actor(name)
            except UnknownInstance:
                return None
            view = self._views[name] = InstanceView(actor, self.config)
        return view

    def instances(self) -> Sequence[InstanceView]:
        found = (self.get(name) for name in self._sup.home.instance_names())
        return [v for v in found if v is not None]
