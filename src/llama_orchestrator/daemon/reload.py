"""Hot reload (issue 11): what the daemon does when ``instances/`` or ``gateway.json`` change.

Every :data:`RESCAN_S` seconds, and at once on SIGHUP or ``llama-orch daemon reload``,
the daemon's ``Configs`` (daemon/configs.py) rereads every instance config by content
and says what changed (its ``config`` events say it to the user). The reloader acts on
that:

* a new folder gets an actor (the gateway routes it; ``up`` reaches it);
* a changed valid config replaces the last good one; nothing is restarted: a running
  server keeps the config it started with, and ``ps``/``describe`` flag the drift
  (state/drift.py) until ``up`` recreates it;
* a broken config keeps its last good version in force, so the gateway keeps routing
  its aliases and the running server is left alone; the broken ones are noted in the
  state store for ``ps``, which reads the records, not the daemon;
* a config gone for good stops its server; its record stays, shown as
  ``(config removed)``, until ``rm``;
* ``gateway.json`` goes to the gateway host, and the gateway's routes are rebuilt after
  any change, so a new alias routes from the rescan that found it.

Removals are acted on only when Configs read the config before: a server found at
daemon start without its config keeps running, listed as ``(config removed)``, for
``down`` and ``rm`` to reach (issue 10). On each spawn the config the server runs is
recorded for ``ps``'s drift check.

Why this is apart from Configs: every reader of a config depends on Configs (the actors
among them), while acting on a change needs the supervisor's actors and the gateway,
which depend on Configs in turn; one class doing both would hold that cycle inside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from llama_orchestrator.config.loader import LoadedConfig, UnknownInstance
from llama_orchestrator.daemon.actor import messages as m
from llama_orchestrator.daemon.actor.handlers import InstanceActor
from llama_orchestrator.daemon.actor.snapshot import InstanceSnapshot
from llama_orchestrator.daemon.configs import Rescan
from llama_orchestrator.daemon.events import Event, EventKind
from llama_orchestrator.daemon.supervisor import Supervisor
from llama_orchestrator.state.drift import PROBLEMS_KEY

log = logging.getLogger("llama_orchestrator.reload")

RESCAN_S = 2.0  # how often the configs are reread (README: "every 2 s")


@dataclass
class ScanReport:
    """What one scan found; ``daemon reload`` prints it."""

    instances: int = 0
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    invalid: dict[str, str] = field(default_factory=dict)  # name -> its first problem, now
    drifted: list[str] = field(default_factory=list)  # running with an older config
    gateway: str | None = None  # what became of gateway.json (None: unchanged)

    def to_dict(self) -> dict[str, Any]:
        return {
            "instances": self.instances,
            "added": self.added,
            "changed": self.changed,
            "removed": self.removed,
            "invalid": self.invalid,
            "drifted": self.drifted,
            "gateway": self.gateway,
        }

    def summary(self) -> str:
        parts = [f"{self.instances} instances"]
        for label, names in (
            ("added", self.added),
            ("changed", self.changed),
            ("removed", self.removed),
            ("invalid", sorted(self.invalid)),
        ):
            if names:
                parts.append(f"{label}: {', '.join(names)}")
        if self.gateway:
            parts.append(f"gateway.json {self.gateway}")
        return "; ".join(parts)


def started_dump(loaded: LoadedConfig) -> dict[str, Any]:
    """A config as describe shows it (defaults included): what drift is diffed on."""
    return loaded.config.model_dump(mode="json", by_alias=True, exclude_none=True)


class Reloader:
    def __init__(
        self,
        sup: Supervisor,
        *,
        on_gateway: Callable[[], Awaitable[str | None]] | None = None,
        on_routes: Callable[[], None] | None = None,
        interval: float = RESCAN_S,
    ) -> None:
        self._sup = sup
        self._configs = sup.configs
        # gateway.json: the gateway host applies it and says what became of it
        self._on_gateway = on_gateway
        self._on_routes = on_routes  # instances added, changed or removed: new routes
        self._interval = interval
        self._lock = asyncio.Lock()
        self._stops: set[asyncio.Task[None]] = set()
        self._noted: dict[str, str] | None = None  # the problems last noted for `ps`
        self._task: asyncio.Task[None] | None = None
        sup.bus.add_sink(self._on_event)

    def _snapshot(self, name: str) -> InstanceSnapshot | None:
        actor = self._sup.actors.get(name)
        return actor.snapshot if actor is not None else None

    def _on_event(self, event: Event) -> None:
        """A server was spawned: record the config it runs, for drift (state/drift.py).

        No file is read here: the start read it through Configs a moment ago, and Configs
        keeps that version's file key (``ps`` compares keys, and hashes only when they
        differ). The write is queued for the store's writer (daemon/recorder.py)."""
        if event.kind is not EventKind.SPAWNED:
            return
        snap = self._snapshot(event.instance)
        loaded = snap.loaded if snap is not None else None
        if loaded is None:
            return
        key = self._configs.key(event.instance, loaded.raw_hash)
        self._sup.store.put_started_config(
            event.instance, loaded.raw_hash, key, started_dump(loaded)
        )

    # -- scanning -----------------------------------------------------------------------

    def prime(self) -> None:
        """At daemon start: learn every config as it is, saying only what is broken."""
        self._configs.prime()
        self._note_problems()

    def start(self) -> None:
        """Rescan every ``interval`` seconds from now on."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="reload")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.scan()
            except Exception:  # a scan that fails must not end the rescans
                log.exception("scanning the configs failed")

    async def scan(self, *, forced: bool = False) -> ScanReport:
        """Rescan every config and act on the differences (``forced``: asked for)."""
        async with self._lock:
            found = await self._configs.rescan(self._snapshot)
            self._act(found)
            report = ScanReport(
                instances=found.instances,
                added=found.added,
                changed=found.changed,
                removed=found.removed,
                invalid=dict(self._configs.problems),  # every broken one, not just new ones
                drifted=[
                    n
                    for n, a in self._sup.actors.items()
                    if self._configs.drifted(n, a.snapshot.running_hash)
                ],
            )
            if self._on_gateway is not None:
                report.gateway = await self._on_gateway()
            self._note_problems()
            if self._on_routes is not None and (found.added or found.changed or found.removed):
                self._on_routes()
            if forced:
                why = "configs reloaded: " + report.summary()
                self._sup.bus.emit("", EventKind.CONFIG, None, None, why)
            return report

    def _act(self, found: Rescan) -> None:
        for name in found.added:
            with contextlib.suppress(UnknownInstance):  # gone again already
                self._sup.actor(name)  # the gateway routes it, `up` reaches it
        for name in found.removed:
            actor = self._sup.actors.get(name)
            if actor is not None and actor.snapshot.active:  # Configs said "stopping"
                task = asyncio.get_running_loop().create_task(self._stop(actor))
                self._stops.add(task)
                task.add_done_callback(self._stops.discard)

    async def _stop(self, actor: InstanceActor) -> None:
        outcome = await actor.request(lambda r: m.Stop(r, reason="its config was removed"))
        if not outcome.ok:
            log.warning("%s: stopping after its config was removed: %s", actor.name, outcome)

    def _note_problems(self) -> None:
        """The broken configs, for ``ps`` (which reads the records, not the daemon)."""
        problems = self._configs.problems
        if problems != self._noted:
            self._sup.store.meta_set(PROBLEMS_KEY, json.dumps(problems))
            self._noted = dict(problems)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for task in self._stops:
            task.cancel()
