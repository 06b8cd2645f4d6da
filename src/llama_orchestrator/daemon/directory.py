"""The daemon's side of the gateway contract (gateway/backend.py): instances as the
gateway sees them, over the supervisor's actors.

A view reads the actor's published snapshot and its leases (attribute reads on the same
loop, nothing copied per request), and the instance's config from the daemon's
``Configs``: its last good version, so a config broken on disk keeps its aliases
routing, and a stopped instance's aliases are known without starting it. A folder the
daemon has not read yet (created a moment ago) is read when the gateway first lists it.
Starting on demand is an ordinary start command to the actor, which joins any start
already in progress: single-flight comes from the actor, not from here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from llama_orchestrator.config.loader import LoadedConfig, UnknownInstance
from llama_orchestrator.daemon.actor import messages as m
from llama_orchestrator.daemon.actor.handlers import InstanceActor
from llama_orchestrator.daemon.ledger import InFlightLedger
from llama_orchestrator.daemon.scheduler import Scheduler
from llama_orchestrator.daemon.seats import ActorSeats, cutoff
from llama_orchestrator.daemon.supervisor import Supervisor
from llama_orchestrator.engine.command import answered_name
from llama_orchestrator.gateway.backend import Endpoint, StartResult

ConfigOf = Callable[[str], "LoadedConfig | None"]
STDERR_LINES = 3  # of a failed on-demand start's stderr, in the gateway's 503


class InstanceView:
    def __init__(
        self,
        actor: InstanceActor,
        config_of: ConfigOf,
        scheduler: Scheduler,
        ledger: InFlightLedger | None = None,
    ) -> None:
        self._unloading = False  # /models/unload: draining, no new leases
        self._answers_for: LoadedConfig | None = None
        self._answers_as: str | None = None
        self._actor = actor
        self._config_of = config_of
        self._scheduler = scheduler
        self._ledger = ledger or InFlightLedger()  # what a crash would lose (daemon/ledger.py)

    def _config(self) -> LoadedConfig | None:
        return self._config_of(self._actor.name)

    @property
    def name(self) -> str:
        return self._actor.name

    @property
    def answers_as(self) -> str | None:
        loaded = self._actor.snapshot.loaded or self._config()
        if loaded is not self._answers_for:  # once per config, not per request
            self._answers_for = loaded
            self._answers_as = None if loaded is None else answered_name(loaded)
        return self._answers_as

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
        loaded = self._actor.snapshot.loaded or self._config()
        return loaded.config.server.parallel if loaded else 1

    @property
    def state(self) -> str:
        return self._actor.snapshot.state.value

    @property
    def routable(self) -> bool:
        return self._actor.snapshot.routable

    @property
    def in_flight(self) -> int:
        return self._actor.leases.in_flight

    @property
    def last_error(self) -> str | None:
        return self._actor.snapshot.last_error or None

    @property
    def context_size(self) -> int | None:
        loaded = self._actor.snapshot.loaded or self._config()
        return loaded.config.model.context_size if loaded else None

    @property
    def cutoff(self) -> float:
        name, scheduler = self._actor.name, self._scheduler
        if self._unloading or scheduler.evicting(name):  # its stop is on the way: no more
            return -math.inf
        return cutoff(self._actor.snapshot, scheduler.draining_since(name), scheduler.hold(name))

    def acquire(self) -> Endpoint | None:
        """A lease on the running server, or None when it cannot take a request now."""
        snap = self._actor.snapshot
        lease = self._actor.leases.acquire(self.name, snap.url if snap.routable else None)
        if lease is not None:
            self._ledger.add(1)
        return lease

    def release(self) -> None:
        leases = self._actor.leases
        leases.release()
        self._ledger.add(-1)
        if not leases.in_flight:
            self._scheduler.poke()  # a start waiting for it to drain goes on now

    async def ensure_started(self) -> StartResult:
        outcome = await self._actor.request(
            lambda r: m.Start(r, reason="requested through the gateway", on_demand=True)
        )
        message = outcome.message
        last = [line.strip() for line in outcome.stderr_tail if line.strip()][-STDERR_LINES:]
        if not outcome.ok and last:  # what `up` shows too (issue 19, item 13)
            message += f" (the end of its stderr: {' | '.join(last)})"
        return StartResult(outcome.ok, message)

    def keep_alive(self, seconds: int) -> None:
        seats = self._scheduler.seats
        if isinstance(seats, ActorSeats):
            seats.keep_alive(self._actor.name, seconds)

    async def unload(self, reason: str) -> StartResult:
        """``down`` after a drain: no new lease from now on (``cutoff``), the requests in
        flight finish, then the actor stops the server (issue 20, ``/models/unload``)."""
        self._unloading = True
        try:
            leases = self._actor.leases
            while leases.in_flight and self._actor.snapshot.routable:
                await self._scheduler.clock.sleep(0.05)  # leases are plain counters: poll
            outcome = await self._actor.request(lambda r: m.Stop(r, reason=reason))
        finally:
            self._unloading = False
        return StartResult(outcome.ok, outcome.message)


class ActorDirectory:
    """Every configured instance, as a stable ``InstanceView`` per name (a new one after
    ``rm``: ``forget``)."""

    def __init__(self, sup: Supervisor, ledger: InFlightLedger | None = None) -> None:
        self._sup = sup
        self._configs = sup.configs
        self._views: dict[str, InstanceView] = {}
        self._ledger = ledger or InFlightLedger()

    def config(self, name: str) -> LoadedConfig | None:
        """The config the gateway routes by: the last good version (None: none yet)."""
        return self._configs.last_good(name)

    def get(self, name: str) -> InstanceView | None:
        view = self._views.get(name)
        if view is None:
            try:
                actor = self._sup.actor(name)
            except UnknownInstance:
                return None
            view = InstanceView(actor, self.config, self._sup.scheduler, self._ledger)
            self._views[name] = view
        return view

    def instances(self) -> Sequence[InstanceView]:
        """The instances whose config has been valid once: one never valid has no
        model, aliases or on_demand to route by (issue 19, item 9; ``broken``)."""
        configs, found = self._configs, []
        for name in self._sup.home.instance_names():
            if name not in configs:
                configs.refresh(name)  # a folder created since the last rescan
            if configs.last_good(name) is None:
                continue
            view = self.get(name)
            if view is not None:
                found.append(view)
        return found

    def broken(self, name: str) -> str | None:
        """Why the instance ``name`` is not routable when its config was never valid."""
        if name not in self._configs or self._configs.last_good(name) is not None:
            return None
        return self._configs.problems.get(name)

    def forget(self, name: str) -> None:
        """``rm``: the instance's actor is gone; a folder of that name gets a new view."""
        self._views.pop(name, None)
