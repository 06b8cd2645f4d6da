"""Conversations survive swaps (issue 21): slots saved before a stop, restored on load.

Every local instance runs with ``--slot-save-path <home>/kv/<name>/`` (engine/command.py).
Before a stop that is not a failure (eviction, idle TTL, ``down``, a restart), the stop
task calls :meth:`KvCache.save`: ``GET /slots``, then ``POST /slots/{id}?action=save`` for
each slot holding at least ``kv_cache.min_tokens`` tokens, all within
:data:`SAVE_BUDGET_S` (one budget for the whole stop, not per slot; a save still running
then is abandoned, and the stop goes on). The files of
all instances share the disk budget ``gateway.json`` ``kv_cache.max_mb`` and age limit
``kv_cache.ttl_s``; the oldest go first.

When a server of the same instance and config hash becomes ready, the readiness task calls
:meth:`KvCache.restore` before it reports the instance ready, so a request that started
it (or waited for it) is served only after the restore: the newest files go into the
server's slots, one each (``POST /slots/{id}?action=restore``), within
:data:`RESTORE_BUDGET_S`.

How a request meets its prefix: llama-server itself picks, for each request, the slot
whose cached tokens share the longest prefix with the request's tokenized prompt
(``slot_prompt_similarity``), and reuses that prefix; a restored slot is such a cache, so
no per-request work is added on the gateway's path. The answer's ``timings.cache_n`` says
how much was reused.

Verify, never trust: a restore the server refuses (a corrupt or truncated file: "invalid
slot save file") or that brings back fewer tokens than were saved is counted
(``result="refused"``/``"short"``), evented as ``kv_restore`` with the tokens expected and
seen, and its file is dropped. A file saved under another config hash (another model,
context or cache type) is never restored: it is dropped when its instance starts with a
new config.

The index, ``<home>/kv/index.json``, holds one record per file: instance, config hash,
slot, token count, bytes, when saved. Its reads and writes and the files' removal run off
the loop (principle 18).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import shutil
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx

from llama_orchestrator.daemon.events import EventBus, EventKind
from llama_orchestrator.fs import write_atomic

T = TypeVar("T")
Offload = Callable[[Callable[[], Any]], Awaitable[Any]]


def in_thread(work: Callable[[], T]) -> Awaitable[T]:
    return asyncio.to_thread(work)


log = logging.getLogger("llama_orchestrator.kvcache")

SAVE_BUDGET_S = 5.0  # one stop's saves together; past it the stop goes on without them
RESTORE_BUDGET_S = 10.0  # one start's restores together, before it is reported ready
INDEX = "index.json"
RESULTS = ("restored", "refused", "short", "error")


@dataclass(frozen=True)
class KvLimits:
    max_bytes: int = 2048 * 1024 * 1024
    ttl_s: float = 7 * 24 * 3600.0
    min_tokens: int = 32


@dataclass(frozen=True)
class KvFile:
    file: str  # the file's full path (in the server's slot save folder)
    instance: str
    config_hash: str
    slot: int
    tokens: int
    bytes: int
    saved_at: float
    sha256: str = ""  # of the file as written: checked before it is restored


def digest(path: Path) -> tuple[int, str]:
    """A file's size and SHA-256 (blocking: run off the loop)."""
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


@dataclass
class KvCounts:
    saves: int = 0
    restores: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RESULTS, 0))


class KvCache:
    """The saved slots of every instance, their index, budgets and counts."""

    def __init__(
        self,
        root: Path,
        http: httpx.AsyncClient,
        bus: EventBus | None = None,
        *,
        offload: Offload = in_thread,
        now: Callable[[], float] = time.time,
        save_budget_s: float = SAVE_BUDGET_S,
        restore_budget_s: float = RESTORE_BUDGET_S,
    ) -> None:
        self.root = root
        self._http = http
        self._bus = bus
        self._offload = offload
        self._now = now
        self.save_budget_s = save_budget_s
        self.restore_budget_s = restore_budget_s
        self.limits = KvLimits()
        self.counts = KvCounts()
        self._files: list[KvFile] | None = None  # read on first use, off the loop
        self._write_lock = threading.Lock()  # index writes run in threads, one at a time
        # Off until gateway.json's settings are applied (daemon/gateway_host.py), as the
        # budgets are: a daemon's harness of fake servers saves nothing.
        self.enabled = False

    def configure(self, max_mb: int, ttl_s: float, min_tokens: int = KvLimits.min_tokens) -> None:
        self.limits = KvLimits(max_mb * 1024 * 1024, float(ttl_s), min_tokens)
        self.enabled = True

    def files(self) -> list[KvFile]:
        return list(self._files or [])

    def bytes_held(self) -> int:
        return sum(f.bytes for f in self._files or [])

    # -- saving ----------------------------------------------------------------------

    async def save(self, name: str, url: str, config_hash: str, folder: Path) -> int:
        """Save ``name``'s slots that hold tokens into ``folder`` (its server's slot save
        path); returns how many files were written. Never raises and never runs past
        :attr:`save_budget_s`."""
        written: list[KvFile] = []
        tried: list[Path] = []
        try:
            work = self._save_slots(name, url, config_hash, folder, written, tried)
            await asyncio.wait_for(work, self.save_budget_s)
        except (TimeoutError, asyncio.TimeoutError):
            self._event(name, f"save abandoned after {self.save_budget_s:g}s", written)
        except (httpx.HTTPError, OSError, ValueError, KeyError, TypeError) as e:
            self._event(name, f"save failed: {e}", written)
        done = {f.file for f in written}
        left = [p for p in tried if str(p) not in done]  # never indexed, never restored
        if written or left:
            try:
                await self._commit(name, written, left)
            except Exception:  # never raises: the stop that follows must happen
                log.exception("%s: recording its saved slots failed", name)
        return len(written)

    async def _save_slots(
        self, name: str, url: str, chash: str, folder: Path, out: list[KvFile], tried: list[Path]
    ) -> None:
        for slot in await self._slots(url):
            sid = int(slot["id"])
            held = slot.get("n_prompt_tokens")  # a field older servers lack: then try
            if held is not None and (not held or int(held) < self.limits.min_tokens):
                continue  # nothing cached, or less than re-reading it costs
            if not tried:  # the server writes into it, and creates no folder itself
                await self._offload(lambda: folder.mkdir(parents=True, exist_ok=True))
            stamp = f"{self._now():.6f}".replace(".", "")
            fname = f"{chash[:16]}-{sid}-{stamp}.bin"
            tried.append(folder / fname)
            r = await self._http.post(
                f"{url}/slots/{sid}?action=save", json={"filename": fname}, timeout=None
            )
            if r.status_code != 200:
                self._event(name, f"slot {sid} not saved: {r.text[:200]}", [])
                continue
            body = r.json()
            size, sha = await self._offload(partial(digest, folder / fname))
            kv = KvFile(
                str(folder / fname), name, chash, sid, int(body.get("n_saved", 0)),
                size, self._now(), sha,
            )  # fmt: skip
            out.append(kv)
            self.counts.saves += 1

    async def _slots(self, url: str) -> list[dict[str, Any]]:
        r = await self._http.get(f"{url}/slots", timeout=None)
        r.raise_for_status()
        slots = r.json()
        return [s for s in slots if isinstance(s, dict) and "id" in s]

    async def _commit(self, name: str, written: list[KvFile], left: list[Path]) -> None:
        """Record the new files (an empty one is dropped), retire ``name``'s older ones,
        then hold the disk and age budgets. ``left``: files an abandoned save left."""
        files = await self._load()
        kept = [f for f in written if f.tokens > 0]
        drop = [Path(f.file) for f in written if f.tokens <= 0] + left
        if kept:  # superseded by this save
            drop += [Path(f.file) for f in files if f.instance == name]
            files = [f for f in files if f.instance != name] + kept
        files, over = self._within_budget(files)
        self._files = files
        drop += [Path(f.file) for f in over]
        await self._offload(lambda: self._write(files, drop))
        self._event(name, f"saved {len(kept)} slot(s)", kept)

    def _within_budget(self, files: list[KvFile]) -> tuple[list[KvFile], list[KvFile]]:
        """The files kept and those past the age or disk budget (the oldest first)."""
        now = self._now()
        fresh = sorted(
            (f for f in files if now - f.saved_at <= self.limits.ttl_s), key=lambda f: f.saved_at
        )
        over = [f for f in files if f not in fresh]
        total = sum(f.bytes for f in fresh)
        while fresh and total > self.limits.max_bytes:
            oldest = fresh.pop(0)
            total -= oldest.bytes
            over.append(oldest)
        return fresh, over

    # -- restoring -------------------------------------------------------------------

    async def restore(self, name: str, url: str, config_hash: str) -> int:
        """Restore ``name``'s newest files saved under ``config_hash`` into the server's
        slots; returns how many took. Files of another config hash are dropped. Never
        raises and never runs past :attr:`restore_budget_s`."""
        files = await self._load()
        stale = [f for f in files if f.instance == name and f.config_hash != config_hash]
        mine = sorted(
            (f for f in files if f.instance == name and f.config_hash == config_hash),
            key=lambda f: -f.saved_at,
        )
        if stale:
            await self._drop(stale)
        if not mine:
            return 0
        # Out of the index while they are tried: a server that dies restoring one (a file
        # another engine build wrote can abort it) does not meet it again at its next start.
        await self._set_index([f for f in files if f not in mine and f not in stale], [])
        took: list[KvFile] = []
        bad: list[KvFile] = []
        try:
            work = self._restore_all(url, mine, took, bad)
            await asyncio.wait_for(work, self.restore_budget_s)
        except (TimeoutError, asyncio.TimeoutError, httpx.HTTPError, ValueError, KeyError) as e:
            self._count(name, "error", None, None, f"restore failed: {e!r}")
        # back in: the ones that took; the others (refused, untried, older) are removed
        gone = [Path(f.file) for f in mine if f not in took]
        await self._set_index([*await self._load(), *took], gone)
        return len(took)

    async def _set_index(self, files: list[KvFile], gone: list[Path]) -> None:
        self._files = files
        await self._offload(lambda: self._write(files, gone))

    async def _restore_all(
        self, url: str, mine: list[KvFile], took: list[KvFile], bad: list[KvFile]
    ) -> None:
        slots = await self._slots(url)
        for slot, kv in zip(slots, mine, strict=False):
            ok = await self._restore_one(url, int(slot["id"]), kv)
            (took if ok else bad).append(kv)

    async def _restore_one(self, url: str, sid: int, kv: KvFile) -> bool:
        fname = Path(kv.file).name
        # Checked by us first: a truncated or altered file can crash a server's restore
        # (the embedded engine aborts on one) rather than be refused by it.
        try:
            size, sha = await self._offload(partial(digest, Path(kv.file)))
        except OSError as e:
            size, sha = -1, str(e)
        if (size, sha) != (kv.bytes, kv.sha256):
            why = f"refused: the file changed since it was saved ({size} of {kv.bytes} bytes)"
            self._count(kv.instance, "refused", kv.tokens, 0, why, kv.file)
            return False
        r = await self._http.post(
            f"{url}/slots/{sid}?action=restore", json={"filename": fname}, timeout=None
        )
        if r.status_code != 200:
            detail = r.text[:200]
            self._count(kv.instance, "refused", kv.tokens, 0, f"refused: {detail}", kv.file)
            return False
        seen = int(r.json().get("n_restored", 0))
        if seen < kv.tokens:
            self._count(kv.instance, "short", kv.tokens, seen, "fewer tokens than saved", kv.file)
            return False
        self._count(kv.instance, "restored", kv.tokens, seen, f"restored into slot {sid}", kv.file)
        return True

    def _count(
        self, name: str, result: str, expected: int | None, seen: int | None, why: str,
        file: str | None = None,
    ) -> None:  # fmt: skip
        self.counts.restores[result] = self.counts.restores.get(result, 0) + 1
        if self._bus is not None:
            data = {"result": result, "expected": expected, "seen": seen, "file": file}
            said = f"{why} (tokens expected {expected}, seen {seen})" if file else why
            self._bus.emit(name, EventKind.KV_RESTORE, None, result, said, data=data)

    async def drop_instance(self, name: str) -> int:
        """Delete ``name``'s saved slots and its folder of them (the instance was
        removed); the number of files deleted. Files it saved into a ``--slot-save-path``
        of its own are deleted one by one, never that folder."""
        gone = [f for f in await self._load() if f.instance == name]
        if gone:
            await self._drop(gone)
        folder = self.root / name
        await self._offload(lambda: shutil.rmtree(folder, ignore_errors=True))
        return len(gone)

    async def _drop(self, gone: list[KvFile]) -> None:
        files = [f for f in await self._load() if f not in gone]
        self._files = files
        await self._offload(lambda: self._write(files, [Path(f.file) for f in gone]))

    # -- the index -------------------------------------------------------------------

    async def load(self) -> None:
        """Read the index now (off the loop), not at the first save or restore."""
        await self._load()

    async def _load(self) -> list[KvFile]:
        if self._files is None:
            files = await self._offload(self._read)
            if self._files is None:  # another save may have read (and changed) it meanwhile
                self._files = files
        return self._files

    def _read(self) -> list[KvFile]:
        try:
            raw = json.loads((self.root / INDEX).read_text())
            files = [KvFile(**entry) for entry in raw["files"]]
        except (OSError, ValueError, KeyError, TypeError):
            return []  # no index (or a damaged one): nothing is restored from it
        return [f for f in files if Path(f.file).is_file()]

    def _write(self, files: list[KvFile], gone: list[Path]) -> None:
        for path in gone:
            with contextlib.suppress(OSError):
                path.unlink()
        self.root.mkdir(parents=True, exist_ok=True)
        # Saves of several instances stopped at once commit concurrently: each write
        # goes through one lock and writes the index as it is now (the newest list the
        # loop set), so a write that runs last never puts back an older list.
        with self._write_lock:
            files = list(self._files if self._files is not None else files)
            text = json.dumps({"files": [asdict(f) for f in files]}, indent=1)
            write_atomic(self.root / INDEX, text)

    def _event(self, name: str, why: str, files: list[KvFile]) -> None:
        if self._bus is None:
            return
        data = {"files": [f.file for f in files], "tokens": sum(f.tokens for f in files)}
        data["bytes"] = sum(f.bytes for f in files)
        why = f"{why}: {data['tokens']} tokens, {data['bytes']} bytes" if files else why
        self._bus.emit(name, EventKind.KV_SAVE, None, str(len(files)), why, data=data)
