"""What the gateway needs from the daemon: routable instances and their leases.

The gateway never reaches into actors or the state store. The daemon hands it a
``Directory`` of ``Instance`` objects; each one lends its endpoint through a lease
(``acquire``/``release``) and starts on demand through ``ensure_started``, which is
single-flight on the daemon side (concurrent calls join one start). Tests may pass their
own implementations of these two protocols.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Endpoint:
    """Where one leased request goes."""

    instance: str
    base_url: str  # e.g. http://127.0.0.1:8001, no trailing slash
    api_key: str | None = None  # sent upstream as a bearer key (a remote instance's)


@dataclass(frozen=True)
class StartResult:
    ok: bool
    message: str  # "ready", or why it could not start (the instance's last error)


class Instance(Protocol):
    """One instance as the gateway sees it. Reads are cheap attribute lookups."""

    @property
    def name(self) -> str: ...

    @property
    def aliases(self) -> tuple[str, ...]: ...

    @property
    def on_demand(self) -> bool: ...

    @property
    def answers_as(self) -> str | None:
        """The ``model`` its answers carry: its name for a server started here (``-a
        NAME``), None when not known (a remote server; ``-a`` in its own ``args``), in
        which case the gateway replaces whatever they say (gateway/rename.py)."""
        ...

    @property
    def slots(self) -> int:
        """``server.parallel``: requests the gateway lets through at once."""
        ...

    @property
    def state(self) -> str:
        """An ``engine.states.State`` value: stopped, starting, running, backoff, ..."""
        ...

    @property
    def routable(self) -> bool:
        """Running and not failing its health checks: a lease may be handed out now."""
        ...

    @property
    def in_flight(self) -> int: ...

    @property
    def last_error(self) -> str | None: ...

    @property
    def context_size(self) -> int | None: ...

    @property
    def cutoff(self) -> float:
        """Requests enqueued (gateway clock, monotonic) after this are not sent to it:
        it is being drained to make room. ``math.inf`` when it takes every request."""
        ...

    def acquire(self) -> Endpoint | None:
        """A lease (in_flight += 1), or None when not routable. Slots are not checked here."""
        ...

    def release(self) -> None:
        """End a lease (in_flight -= 1, last_used = now)."""
        ...

    async def ensure_started(self) -> StartResult:
        """Start it (as ``up`` does) and return once it is ready or has failed."""
        ...

    def keep_alive(self, seconds: int) -> None:
        """Stop it once idle for ``seconds`` (0: never), instead of its config's ``ttl``,
        until it stops: an Ollama client's ``keep_alive``."""
        ...

    async def unload(self, reason: str) -> StartResult:
        """Stop it as ``down`` does, once the requests in flight on it have finished
        (no new lease is handed out meanwhile: ``cutoff``); ``/models/unload``."""
        ...


class Directory(Protocol):
    def instances(self) -> Sequence[Instance]:
        """Every instance with a config, in name order."""
        ...

    def get(self, name: str) -> Instance | None: ...

    def broken(self, name: str) -> str | None:
        """Why ``name``, an instance whose config was never valid (so not listed by
        ``instances``), cannot be routed to; None for any other name."""
        ...
