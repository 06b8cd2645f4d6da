"""The daemon's instance configs: the one place in the daemon that reads them.

Everything in the daemon that needs an instance's config asks ``Configs``: the actors (a
start reads the file now: ``refresh``), the gateway's directory (aliases, slots), the
control API (drift, validation, log files), the supervisor (autostart, adoption, log
files). Nothing else parses a config, so there is one freshness rule, content: a file is
read and compared by its content hash with the version last read, not by inode or mtime.
An editor's atomic rename, a ConfigMap's symlink swap (``..data`` pointing elsewhere) and
a same-size rewrite within one tick of the file system's clock all change what a read
returns, and nothing else matters.

Per name it keeps the current version (a ``LoadedConfig``, or the ``ConfigError`` of a
broken file) and the last good one, which stays in force while the file is broken: the
gateway routes its aliases, a running server is left alone. Each change is published on
the bus as a ``config`` event that carries the parsed config (``Event.config``; none for
a broken or removed file), and named in the ``Rescan`` that ``rescan`` returns. What is
done about a change (an actor for a new folder, a stop for a removed one, the gateway's
routes, the notes ``ps`` reads) is daemon/reload.py's: Configs knows files, not actors.

``rescan`` looks at every file (the reloader's housekeeping, SIGHUP, ``daemon reload``);
``refresh`` reads one now (``up``, every start, a name seen for the first time). A file
missing at a rescan is removed only when it is still missing :data:`GONE_GRACE_S` later
(an editor that moves the old file away before writing the new one).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from llama_orchestrator.config.loader import ConfigError, LoadedConfig, load_file
from llama_orchestrator.daemon.actor.snapshot import InstanceSnapshot
from llama_orchestrator.daemon.events import EventBus, EventKind
from llama_orchestrator.home import Home, has_config, is_valid_name
from llama_orchestrator.state.configcache import key_of
from llama_orchestrator.state.drift import hash_of

log = logging.getLogger("llama_orchestrator.reload")

GONE_GRACE_S = 0.5  # a config missing this long after a rescan noticed it is removed

Current = LoadedConfig | ConfigError | None
# The instance's actor's snapshot, for what a change means to it (None: no actor)
Running = Callable[[str], "InstanceSnapshot | None"]


def _no_actor(_name: str) -> InstanceSnapshot | None:
    return None


@dataclass
class Rescan:
    """What one rescan found (the events say the same, in words)."""

    instances: int = 0
    added: list[str] = field(default_factory=list)  # first seen (valid or not)
    changed: list[str] = field(default_factory=list)  # a new valid version
    removed: list[str] = field(default_factory=list)  # gone for good (forgotten here)


class Configs:
    def __init__(self, home: Home, bus: EventBus) -> None:
        self.home = home
        self._bus = bus
        self._hashes: dict[str, str] = {}  # name -> content hash of the version last read
        self._keys: dict[str, str] = {}  # name -> that version's file key (state/configcache)
        self._current: dict[str, LoadedConfig | ConfigError] = {}
        self._good: dict[str, LoadedConfig] = {}  # name -> its last good config
        self.problems: dict[str, str] = {}  # name -> why its config is broken now
        self._primed = False  # once primed, a name seen for the first time is announced

    # -- what the others ask -------------------------------------------------------------

    def names(self) -> list[str]:
        """Every name whose config was read (valid or not), sorted."""
        return sorted(self._hashes)

    def __contains__(self, name: object) -> bool:
        return name in self._hashes

    def current(self, name: str) -> Current:
        """The version last read: a config, the error of a broken file, or None (no file)."""
        return self._current.get(name)

    def valid(self, name: str) -> LoadedConfig | None:
        """The version last read when it is valid (None: broken, or no file)."""
        found = self._current.get(name)
        return found if isinstance(found, LoadedConfig) else None

    def last_good(self, name: str) -> LoadedConfig | None:
        """The last valid version (it stays in force while the file is broken)."""
        return self._good.get(name)

    def drifted(self, name: str, running_hash: str | None) -> bool:
        """Whether a server started with the config of ``running_hash`` runs another one
        than the file holds now (a broken file differs too)."""
        now = self._hashes.get(name)
        return bool(running_hash) and now is not None and now != running_hash

    def key(self, name: str, raw_hash: str) -> str | None:
        """The file key (state/configcache.py) of the version last read, when it is the
        one of ``raw_hash`` (``ps`` then compares keys instead of hashing)."""
        return self._keys.get(name) if self._hashes.get(name) == raw_hash else None

    def forget(self, name: str) -> None:
        """``rm``, or a folder removed: nothing is known of it any more."""
        for table in (self._hashes, self._keys, self._current, self._good, self.problems):
            table.pop(name, None)

    # -- reading -------------------------------------------------------------------------

    def prime(self) -> None:
        """At daemon start: learn every config as it is, saying only what is broken."""
        for name in self.home.instance_names():
            self._read(name, _no_actor, None)
        self._primed = True

    def refresh(self, name: str, running: InstanceSnapshot | None = None) -> Current:
        """Read ``name``'s file now and return its current version (None: no such file).

        ``running``: its actor's snapshot, so a change event says whether its server keeps
        running with the config it started with."""
        if name not in self._hashes and not is_valid_name(name):
            return None  # never a path out of instances/ (a name from a request)
        path = self.home.config_path(name)
        if not has_config(path.parent):
            return None  # a removal is the rescan's to decide (after its grace)
        self._read(name, lambda _n: running, None)
        return self._current.get(name)

    async def rescan(self, running: Running = _no_actor) -> Rescan:
        """Compare every config with the version last read; publish what changed."""
        names = self.home.instance_names()
        found = Rescan(instances=len(names))
        for name in names:
            self._read(name, running, found)
        gone = [n for n in self._hashes if n not in names]
        if gone:
            await asyncio.sleep(GONE_GRACE_S)  # an editor's move-then-write
        for name in gone:
            if name not in self._hashes:  # forgotten meanwhile: `rm` took it
                continue
            if not has_config(self.home.config_path(name).parent):  # else: back already
                self._removed(name, running(name))
                found.removed.append(name)
        return found

    def _read(self, name: str, running: Running, found: Rescan | None) -> None:
        path = self.home.config_path(name)
        try:
            data = path.read_bytes()
        except (IsADirectoryError, PermissionError) as e:  # broken, and said once (issue 19)
            data = f"{type(e).__name__}: {e.strerror}".encode()
        except OSError:
            return  # gone (the rescan decides) or unreadable for now: as it was
        digest = hash_of(data)
        if self._hashes.get(name) == digest:
            return
        first, announce = name not in self._hashes, self._primed
        self._hashes[name] = digest
        self._keys.pop(name, None)
        try:
            loaded = load_file(path)
        except ConfigError as e:
            self._current[name] = e
            if first and announce and found is not None:
                found.added.append(name)
            self._broken(name, e)
            return
        self._hashes[name] = loaded.raw_hash  # the version parsed, should it differ
        if loaded.raw_hash == digest:
            self._keys[name] = key_of(data)
        was_broken = self.problems.pop(name, None) is not None
        self._current[name] = self._good[name] = loaded
        if first:
            if announce:
                if found is not None:
                    found.added.append(name)
                self._emit(name, f"added: {path}", loaded)
            return
        if found is not None:
            found.changed.append(name)
        why = f"{path} changed" + (" and is valid again" if was_broken else "")
        snap = running(name)
        if snap is not None and self.drifted(name, snap.running_hash):
            why += (
                f"; {name} keeps running with the config it started with "
                f"(`llama-orch up {name}` recreates it)"
            )
        self._emit(name, why, loaded)

    def _broken(self, name: str, e: ConfigError) -> None:
        problem = str(e.problems[0]) if e.problems else str(e)
        more = len(e.problems) - 1
        if more > 0:
            problem += f" (and {more} more: `llama-orch config validate {name}`)"
        if name in self._good:
            kept = "the last good version stays in force"
        else:  # never valid: nothing to keep (issue 19, item 9)
            kept = "it cannot start until this is fixed"
        self.problems[name] = f"{problem}; {kept}"  # ps, reload and the gateway say which
        self._emit(name, f"invalid config: {problem}; {kept}", None)
        log.warning("%s: invalid config: %s; %s", name, problem, kept)

    def _removed(self, name: str, snap: InstanceSnapshot | None) -> None:
        self.forget(name)
        runs = snap is not None and snap.active
        why = f"{self.home.config_path(name)} was removed" + (
            "; stopping its server" if runs else ""
        )
        self._emit(name, why, None)

    def _emit(self, name: str, why: str, loaded: LoadedConfig | None) -> None:
        self._bus.emit(name, EventKind.CONFIG, None, None, why, config=loaded)
