"""The event bus: every change in the daemon is published once, as a typed ``Event``.

Two kinds of consumer:

* **sinks** run inline, in publish order, and must be quick: the SQLite recorder is one
  (it queues the event for the store's writer task, daemon/recorder.py, and the control
  API answers a command once that is on disk, so ``describe`` right after ``up`` shows
  it).
* **subscribers** each get a bounded queue (the event stream, metrics, the dashboard).
  ``publish`` never waits for one: a subscriber whose queue is full is dropped, counted
  in ``dropped_total``, and finds ``dropped`` set when it reads on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llama_orchestrator.config.loader import LoadedConfig

log = logging.getLogger("llama_orchestrator.events")

SUBSCRIBER_QUEUE = 1000  # events buffered per subscriber before it is dropped


class EventKind(str, Enum):
    STATE = "state"  # old -> new state, with the reason
    HEALTH = "health"  # old -> new health
    SPAWNED = "spawned"  # a server process was created (new = pid, reason = command line)
    EXIT = "exit"  # a server process ended (reason = how)
    ADOPTED = "adopted"  # a running server taken back after a daemon start
    START_REFUSED = "start_refused"  # a start that could not begin (reason = why)
    LOG_ROTATED = "log_rotated"
    AUTOSTART = "autostart"
    NOT_RESTARTED = "not_restarted"  # after a reboot, an instance without autostart
    CONFIG = "config"  # configs reloaded or changed (``config``: the parsed one, if any)
    REQUEST = "request"  # a request through the gateway (data holds its figures)
    DAEMON = "daemon"  # the daemon itself: started, stopping, state database recreated
    MEMORY = "memory"  # a run's first memory reading (new = MiB measured, reason = detail)
    KV_SAVE = "kv_save"  # slots saved before a stop (new = files written, data = figures)
    PLACED = "placed"  # an ``auto`` instance's device for this start (new = device key)
    KV_RESTORE = "kv_restore"  # a saved slot restored, or not (new = result; data: expected, seen)


@dataclass(frozen=True)
class Event:
    instance: str  # "" for daemon-wide events
    kind: EventKind
    old: str | None = None
    new: str | None = None
    reason: str | None = None
    ts: float = field(default_factory=time.time)
    data: dict[str, Any] | None = None
    # a ``config`` event's parsed config (daemon/configs.py): for the daemon's own
    # consumers; neither recorded nor streamed (the file is the user's view of it)
    config: LoadedConfig | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "kind": self.kind.value,
            "old": self.old,
            "new": self.new,
            "reason": self.reason,
            "ts": self.ts,
            "data": dict(self.data) if self.data is not None else None,
        }


Sink = Callable[[Event], None]


class Subscription:
    """One consumer's bounded view of the bus; iterate it, or ``await get()``."""

    def __init__(
        self,
        bus: EventBus,
        maxsize: int,
        instances: Collection[str] | None,
        kinds: Collection[EventKind] | None,
    ) -> None:
        self._bus = bus
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)
        self.instances = frozenset(instances) if instances else None
        self.kinds = frozenset(kinds) if kinds else None
        self.dropped = False  # set when it fell behind and was removed from the bus

    def wants(self, event: Event) -> bool:
        if self.instances is not None and event.instance not in self.instances:
            return False
        return self.kinds is None or event.kind in self.kinds

    async def get(self) -> Event | None:
        """The next event; None once dropped and drained, or closed."""
        if self.dropped and self.queue.empty():
            return None
        return await self.queue.get()

    async def __aiter__(self) -> AsyncIterator[Event]:
        while True:
            event = await self.get()
            if event is None:
                return
            yield event

    def close(self) -> None:
        self._bus.unsubscribe(self)


class EventBus:
    def __init__(self) -> None:
        self._sinks: list[Sink] = []
        self._subs: list[Subscription] = []
        self.dropped_total = 0
        self.published_total = 0

    def add_sink(self, sink: Sink) -> None:
        self._sinks.append(sink)

    def subscribe(
        self,
        *,
        maxsize: int = SUBSCRIBER_QUEUE,
        instances: Collection[str] | None = None,
        kinds: Collection[EventKind] | None = None,
    ) -> Subscription:
        sub = Subscription(self, maxsize, instances, kinds)
        self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with contextlib.suppress(ValueError):
            self._subs.remove(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def publish(self, event: Event) -> None:
        self.published_total += 1
        for sink in self._sinks:
            try:
                sink(event)
            except Exception:  # a failing sink must not stop the daemon or other sinks
                log.exception("event sink failed on %s %s", event.instance, event.kind.value)
        for sub in list(self._subs):
            if not sub.wants(event):
                continue
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                sub.dropped = True
                self.dropped_total += 1
                self.unsubscribe(sub)
                log.warning(
                    "an event subscriber fell %d events behind and was dropped", sub.queue.maxsize
                )

    def emit(
        self,
        instance: str,
        kind: EventKind,
        old: str | None = None,
        new: str | None = None,
        reason: str | None = None,
        *,
        data: dict[str, Any] | None = None,
        config: LoadedConfig | None = None,
    ) -> Event:
        event = Event(instance, kind, old, new, reason, data=data, config=config)
        self.publish(event)
        return event
