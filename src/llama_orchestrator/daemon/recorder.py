"""The state store's subscriber on the event bus: events become rows in ``events``.

The table is pruned as it grows: each instance keeps its newest ``EVENTS_KEPT`` events
(500 by default), so a crash-looping server cannot fill the disk. Request activity is
not recorded here (it is too frequent for a durable log); live consumers get it from
the bus.
"""

from __future__ import annotations

from collections import Counter

from llama_orchestrator.daemon.events import Event, EventKind
from llama_orchestrator.state.db import StateStore

EVENTS_KEPT = 500
PRUNE_EVERY = 50  # inserts per instance between two prunes


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
