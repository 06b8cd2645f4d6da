"""The state store's side of the daemon: events become rows in ``events``, and one writer
task puts every write on disk in batches, off the event loop (issue 17).

The daemon and its gateway share one event loop, so no SQLite statement may run on it: a
commit that waits on the disk or on a reader's checkpoint would stall every stream in
flight. ``StoreWriter`` switches the store to deferred writes (state/pending.py): a row
update (state, health, pid, last_error...), an event, a meta value or a started config
is queued in memory, where the daemon's own reads (``get``, ``all``, ``events``,
``meta_get``) see it at once, and the writer task takes whatever is queued as one batch
and commits it in one transaction on its own connection, in its own thread.

How promptly a write reaches the disk: the writer starts a batch as soon as the loop runs
it after a write, so a write is committed within the batch in flight plus its own, a few
milliseconds on a local disk (``PRAGMA synchronous=NORMAL`` in WAL mode commits without
an fsync), and within ``BATCH_BOUND_S`` (50 ms) unless the disk itself stalls (a batch
that takes longer is logged). Hence:

* the CLI, reading SQLite directly, is behind the daemon by at most that;
* a daemon that crashes loses at most the writes of that last moment: the next daemon
  re-adopts servers from their rows, so only a server spawned in those few milliseconds
  is missed (its row has no PID yet); its next start finds the port taken and names
  the process that holds it;
* the control API's replies to commands wait for ``flushed`` (``Supervisor.recorded``),
  so what a command did is on disk before its caller hears back: ``describe`` or ``ps``
  right after ``up`` shows it, as before;
* on daemon shutdown ``close`` writes everything still queued.

A batch that fails (the disk is full, the file is locked past the busy timeout) is put
back in front of the queue and tried again after ``RETRY_S``; the daemon's reads keep
seeing its values meanwhile.

Events are recorded by ``Recorder``, a sink of the bus (it only queues, so it is quick),
rather than a bus subscription: a subscriber that falls behind is dropped, and the record
must not lose events. The table is pruned as it grows: each instance keeps its newest
``EVENTS_KEPT`` events (500 by default), so a crash-looping server cannot fill the disk.
Request activity is not recorded (it is too frequent for a durable log); live consumers
get it from the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from llama_orchestrator.daemon.events import Event, EventKind
from llama_orchestrator.state.db import StateStore

log = logging.getLogger("llama_orchestrator.recorder")

EVENTS_KEPT = 500
PRUNE_EVERY = 50  # inserts per instance between two prunes
BATCH_BOUND_S = 0.05  # what the docstring promises for a write to reach the disk (logged)
RETRY_S = 0.5  # after a batch that failed


class Recorder:
    def __init__(self, store: StateStore, keep: int = EVENTS_KEPT) -> None:
        self.store = store
        self.keep = keep
        self._since_prune: Counter[str] = Counter()

    def __call__(self, event: Event) -> None:
        if event.kind is EventKind.REQUEST:
            return
        self.store.add_event(
            event.instance, event.kind.value, event.old, event.new, event.reason, ts=event.ts
        )
        self._since_prune[event.instance] += 1
        if self._since_prune[event.instance] >= PRUNE_EVERY:
            self._since_prune[event.instance] = 0
            self.store.prune_events(event.instance, self.keep)


class StoreWriter:
    """The one task that writes the store, in batches, in its own thread."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self._wake = asyncio.Event()
        self._pending = store.defer_writes(self._wake.set)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state-writer")
        self._task: asyncio.Task[None] | None = None
        self._flushes: list[tuple[int, asyncio.Future[None]]] = []
        self.batches = 0  # committed, for the tests and the curious

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="state-writer")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._pending.waiting:
                continue
            ops = self._pending.take()
            began = loop.time()
            try:
                await loop.run_in_executor(self._pool, self._pending.write, ops)
            except Exception as e:  # keep every write: it goes again with the next batch
                self._pending.failed()
                log.error("writing the state database %s failed: %s", self.store.path, e)
                await asyncio.sleep(RETRY_S)
                self._wake.set()
                continue
            self._pending.written()
            self.batches += 1
            self._answer_flushes()
            took = loop.time() - began
            if took > BATCH_BOUND_S:  # the bound the docstring promises: say when it is not kept
                log.warning("a batch of %d state writes took %.0f ms", len(ops), took * 1000)

    def _answer_flushes(self) -> None:
        done = self._pending.written_total
        still = []
        for target, fut in self._flushes:
            if target <= done:
                if not fut.done():
                    fut.set_result(None)
            else:
                still.append((target, fut))
        self._flushes = still

    async def flushed(self) -> None:
        """Return once every write queued before this call is on disk."""
        target = self._pending.queued_total
        if self._task is None or self._pending.written_total >= target:
            return
        fut = asyncio.get_running_loop().create_future()
        self._flushes.append((target, fut))
        await fut

    async def close(self) -> None:
        """Write what is queued, then stop (daemon shutdown)."""
        if self._task is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.flushed(), 10)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._pending.waiting:  # the writer gave up or never ran: write them here
            loop = asyncio.get_running_loop()
            ops = self._pending.take()
            try:
                await loop.run_in_executor(self._pool, self._pending.write, ops)
                self._pending.written()
            except Exception as e:
                log.error("writing the state database %s failed: %s", self.store.path, e)
        self._pool.shutdown(wait=True)
