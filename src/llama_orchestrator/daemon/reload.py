"""Hot reload (issue 11): the daemon's watch over ``instances/`` and ``gateway.json``.

Every few seconds (the supervisor's housekeeping), and at once on SIGHUP or
``llama-orch daemon reload``, each ``instances/*/config.json`` is read and compared by
its content hash with the version last seen. Content, not inode or mtime: an editor's
atomic rename, a Kubernetes ConfigMap's symlink swap (``..data`` pointing elsewhere) and
a same-size rewrite within one clock tick all change what a read returns, and nothing
else matters. What the watcher does:

* a new folder gets an actor (the gateway routes it; ``up`` reaches it);
* a changed valid config replaces the last good one; nothing is restarted: a running
  server keeps the config it started with, and ``ps``/``describe`` flag the drift
  (state/drift.py) until ``up`` recreates it;
* a broken config is reported once (a ``config`` event naming the file and its
  problem); the last good version stays in force, so the gateway keeps routing its
  aliases and the running server is left alone;
* a config gone for good (still gone after :data:`GONE_GRACE_S`, which covers editors
  that move the old file away before writing the new one) stops its server; its record
  stays, shown as ``(config removed)``, until ``rm``.

Removals are acted on only when the watcher saw the config before: a server found at
daemon start without its config keeps running, listed as ``(config removed)``, for
``down`` and ``rm`` to reach (issue 10).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from llama_orchestrator.config.loader import ConfigError, LoadedConfig, load_file
from llama_orchestrator.daemon.actor import messages as m
from llama_orchestrator.daemon.actor.handlers import InstanceActor
from llama_orchestrator.daemon.events import Event, EventBus, EventKind
from llama_orchestrator.engine.states import Desired, State
from llama_orchestrator.home import Home
from llama_orchestrator.state.configcache import content_key
from llama_orchestrator.state.db import StateStore
from llama_orchestrator.state.drift import PROBLEMS_KEY, config_hash

log = logging.getLogger("llama_orchestrator.reload")

GONE_GRACE_S = 0.5  # a config missing this long after a scan noticed it is removed
_AT_REST = (State.STOPPED, State.EXITED, State.FATAL)


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


class ConfigWatcher:
    def __init__(
        self,
        home: Home,
        bus: EventBus,
        store: StateStore,
        actors: dict[str, InstanceActor],
        actor_of: Callable[[str], InstanceActor],
    ) -> None:
        self.home = home
        self.bus = bus
        self.store = store
        self._actors = actors
        self._actor_of = actor_of
        self._hashes: dict[str, str] = {}  # name -> content hash of the version last seen
        self.good: dict[str, LoadedConfig] = {}  # name -> its last good config
        self.problems: dict[str, str] = {}  # name -> why its config is broken now
        # gateway.json: the gateway host applies it and says what became of it
        self.on_gateway: Callable[[], Awaitable[str | None]] | None = None
        self.on_forget: list[Callable[[str], None]] = []  # an instance's config is gone
        self._lock = asyncio.Lock()
        self._stops: set[asyncio.Task[None]] = set()
        bus.add_sink(self._on_event)

    # -- what the others ask ------------------------------------------------------------

    def config(self, name: str) -> LoadedConfig | None:
        """``name``'s last good config (None: never seen valid, or removed)."""
        return self.good.get(name)

    def forget(self, name: str) -> None:
        """``rm``: the instance is gone with its records; nothing is to be said of it."""
        self._hashes.pop(name, None)
        self.good.pop(name, None)
        self.problems.pop(name, None)
        for hook in self.on_forget:
            hook(name)

    def _on_event(self, event: Event) -> None:
        """A server was spawned: record the config it runs, for drift (state/drift.py)."""
        if event.kind is not EventKind.SPAWNED:
            return
        actor = self._actors.get(event.instance)
        loaded = actor.loaded if actor is not None else None
        if loaded is None:
            return
        # The file's cheap key, if it still holds that very config (else None: ps then
        # hashes, and finds it changed). Done here, on the loop: two reads of a config of a
        # few hundred bytes, a CRC, a SHA-256 and a model_dump measured 21 us at the median
        # (53 us p99) on a busy 2-core machine, once per spawn; the write is queued for the
        # store's writer (daemon/recorder.py), so nothing here waits on the disk (issue 17).
        key = content_key(loaded.path)
        same = key is not None and config_hash(loaded.path) == loaded.raw_hash
        self.store.put_started_config(
            event.instance, loaded.raw_hash, key if same else None, started_dump(loaded)
        )

    # -- scanning -----------------------------------------------------------------------

    def prime(self) -> None:
        """At daemon start: learn every config as it is, saying only what is broken."""
        for name in self.home.instance_names():
            self._check(name, ScanReport(), announce=False)
        self._record_problems()

    async def scan(self, *, forced: bool = False) -> ScanReport:
        """Compare every config with the version last seen and act on the differences."""
        async with self._lock:
            report = ScanReport()
            problems = dict(self.problems)
            names = self.home.instance_names()
            report.instances = len(names)
            for name in names:
                self._check(name, report, announce=True)
            gone = [n for n in self._hashes if n not in names]
            if gone:
                await asyncio.sleep(GONE_GRACE_S)  # an editor's move-then-write
            for name in gone:
                if name not in self._hashes:  # forgotten meanwhile: `rm` took it
                    continue
                if not self.home.config_path(name).is_file():  # else: back already
                    self._removed(name)
                    report.removed.append(name)
            report.invalid = dict(self.problems)  # every broken one, not just new ones
            report.drifted = [n for n, a in self._actors.items() if self._drifted(n, a)]
            if self.on_gateway is not None:
                report.gateway = await self.on_gateway()
            if self.problems != problems:
                self._record_problems()
            if forced:
                why = "configs reloaded: " + report.summary()
                self.bus.emit("", EventKind.CONFIG, None, None, why)
            return report

    def _check(self, name: str, report: ScanReport, *, announce: bool) -> None:
        path = self.home.config_path(name)
        digest = config_hash(path)
        if digest is None or self._hashes.get(name) == digest:
            return
        first = name not in self._hashes
        self._hashes[name] = digest
        try:
            loaded = load_file(path)
        except ConfigError as e:
            self._broken(name, e, report, announce=announce, first=first)
            return
        self._hashes[name] = loaded.raw_hash  # the version parsed, should it differ
        was_broken = self.problems.pop(name, None) is not None
        self.good[name] = loaded
        if first:
            if announce:
                self._actor_of(name)  # the gateway routes it, `up` reaches it
                report.added.append(name)
                self.bus.emit(name, EventKind.CONFIG, None, None, f"added: {path}")
            return
        report.changed.append(name)
        why = f"{path} changed" + (" and is valid again" if was_broken else "")
        actor = self._actors.get(name)
        if actor is not None and self._drifted(name, actor):
            why += (
                f"; {name} keeps running with the config it started with "
                f"(`llama-orch up {name}` recreates it)"
            )
        self.bus.emit(name, EventKind.CONFIG, None, None, why)

    def _broken(
        self, name: str, e: ConfigError, report: ScanReport, *, announce: bool, first: bool
    ) -> None:
        problem = str(e.problems[0]) if e.problems else str(e)
        more = len(e.problems) - 1
        if more > 0:
            problem += f" (and {more} more: `llama-orch config validate {name}`)"
        self.problems[name] = problem
        if first and announce:
            self._actor_of(name)
            report.added.append(name)
        if name in self.good:
            kept = "the last good version stays in force"
        else:
            kept = "it cannot start until this is fixed"
        self.bus.emit(name, EventKind.CONFIG, None, None, f"invalid config: {problem}; {kept}")
        log.warning("%s: invalid config: %s; %s", name, problem, kept)

    def _removed(self, name: str) -> None:
        self._hashes.pop(name, None)
        self.good.pop(name, None)
        self.problems.pop(name, None)
        for hook in self.on_forget:
            hook(name)
        path = self.home.config_path(name)
        actor = self._actors.get(name)
        runs = actor is not None and (
            actor.desired is Desired.RUNNING
            or actor.state not in _AT_REST
            or actor.proc is not None
        )
        why = f"{path} was removed" + ("; stopping its server" if runs else "")
        self.bus.emit(name, EventKind.CONFIG, None, None, why)
        if actor is not None and runs:
            task = asyncio.get_running_loop().create_task(self._stop(actor))
            self._stops.add(task)
            task.add_done_callback(self._stops.discard)

    async def _stop(self, actor: InstanceActor) -> None:
        outcome = await actor.request(lambda r: m.Stop(r, reason="its config was removed"))
        if not outcome.ok:
            log.warning("%s: stopping after its config was removed: %s", actor.name, outcome)

    def _drifted(self, name: str, actor: InstanceActor) -> bool:
        if actor.proc is None or name not in self._hashes:
            return False
        recorded = self.store.record(name).config_hash
        return bool(recorded) and recorded != self._hashes[name]

    def _record_problems(self) -> None:
        """The broken configs, for ``ps`` (which reads the records, not the daemon)."""
        self.store.meta_set(PROBLEMS_KEY, json.dumps(self.problems))

    def close(self) -> None:
        for task in self._stops:
            task.cancel()
