"""``GET /v1/events``: the event bus as Server-Sent Events, like ``docker events``.

On connect, one ``snapshot`` event per instance (state, health, pid); then every event
of the bus as it is published, each as ``event: <kind>`` with the event as JSON in
``data``. ``?instance=`` (repeatable, or a comma list) and ``?kinds=`` (EventKind values)
filter both. A comment line goes out every ``KEEPALIVE_S`` so proxies keep the stream.

``?logs=NAME`` adds that instance's log lines as ``log`` events, followed from now on
(``?tail=N``: its last N lines first), as daemon/api/log_events.py says; ``?kinds=log``
alone then leaves only them.

The subscription is bounded (``SUBSCRIBER_QUEUE``): a client that does not read is
dropped by the bus, and its stream ends with a ``dropped`` event saying so; the daemon
never waits for it. The stream also ends (``end``) when the daemon stops.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Collection
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.params import Depends
from fastapi.responses import StreamingResponse

from llama_orchestrator.config.loader import LoadedConfig, UnknownInstance
from llama_orchestrator.daemon.actor.snapshot import AT_REST
from llama_orchestrator.daemon.api.log_events import (
    LOG_KIND,
    MAX_TAIL,
    LogFeed,
    RemoteLog,
    log_files,
)
from llama_orchestrator.daemon.events import SUBSCRIBER_QUEUE, Event, EventBus, EventKind
from llama_orchestrator.daemon.supervisor import Supervisor
from llama_orchestrator.engine.states import ALIVE, Desired, Health, State
from llama_orchestrator.home import name_problem

KEEPALIVE_S = 15.0
STOPPING = "stopping"  # the ``new`` of the DAEMON event published as the daemon stops
# Every kind a stream's events may have: the snapshot, the bus's, and ``log`` lines; then
# ``dropped`` or ``end`` closes it. ``?hello=1`` sends the list first (the web page's
# listeners come from it, not from a copy).
STREAM_KINDS = ("snapshot", *(k.value for k in EventKind), LOG_KIND, "dropped", "end")
# The groups of states the page's buttons follow (start when not alive, stop when not at
# rest), sent with the kinds: the page keeps no list of state names either.
STATE_GROUPS = {
    "alive": [s.value for s in State if s in ALIVE],
    "at_rest": [s.value for s in State if s in AT_REST],
}

Snapshot = Callable[[], list[dict[str, Any]]]


def split_values(values: list[str]) -> list[str]:
    """``["a,b", "c"]`` -> ``["a", "b", "c"]``: a query parameter repeated or comma-listed."""
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def parse_kinds(values: list[str]) -> set[EventKind] | None:
    """The EventKinds named (``log``, for ``?logs=`` lines, is not one of the bus's and
    is left out); a 400 naming a wrong value and the valid ones."""
    names = split_values(values)
    if not names:
        return None
    valid = {k.value: k for k in EventKind}
    wrong = [n for n in names if n not in valid and n != LOG_KIND]
    if wrong:
        raise HTTPException(
            400,
            f"unknown event kind {', '.join(repr(w) for w in wrong)}; "
            f"valid kinds: {', '.join([*valid, LOG_KIND])}",
        )
    return {valid[n] for n in names if n in valid}


def sse(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data, default=str)}\n\n".encode()


def _wanted(
    event: Event, instances: Collection[str] | None, kinds: Collection[EventKind] | None
) -> bool:
    if instances is not None and event.instance not in instances:
        return False
    return kinds is None or event.kind in kinds


async def stream(
    bus: EventBus,
    snapshot: Snapshot,
    *,
    instances: Collection[str] | None = None,
    kinds: Collection[EventKind] | None = None,
    keepalive: float = KEEPALIVE_S,
    maxsize: int = SUBSCRIBER_QUEUE,
    logs: LogFeed | None = None,
    hello: bool = False,
) -> AsyncIterator[bytes]:
    """The SSE body: the snapshot, then the bus's events (and ``logs``' lines) until
    dropped or stopping. With ``hello``, a ``hello`` event comes first, naming every kind
    the stream may send (:data:`STREAM_KINDS`) and the groups of states
    (:data:`STATE_GROUPS`): the web page listens for those kinds and follows those groups.

    The subscription takes every event (so the daemon's ``stopping`` is seen whatever the
    filters) and is made before the snapshot is taken, so nothing falls between them."""
    sub = bus.subscribe(maxsize=maxsize)
    on_bus: asyncio.Future[Event | None] | None = None
    on_log: asyncio.Future[dict[str, Any] | None] | None = None
    if logs is not None:
        logs.start()
    try:
        if hello:
            yield sse("hello", {"kinds": list(STREAM_KINDS), "states": STATE_GROUPS})
        for row in snapshot():
            if instances is None or row["instance"] in instances:
                yield sse("snapshot", row)
        while True:
            if on_bus is None:
                on_bus = asyncio.ensure_future(sub.get())
            if logs is not None and on_log is None:
                on_log = asyncio.ensure_future(logs.get())
            waiting = {f for f in (on_bus, on_log) if f is not None}
            done, _ = await asyncio.wait(
                waiting, timeout=keepalive, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                yield b": keep-alive\n\n"
                continue
            if on_log is not None and on_log.done():
                line, on_log = on_log.result(), None
                if line is None:
                    yield _dropped(f"{logs.maxsize if logs else maxsize} log lines", bus)
                    return
                yield sse(LOG_KIND, line)
            if not on_bus.done():
                continue
            event, on_bus = on_bus.result(), None
            if event is None:
                yield _dropped(f"{maxsize} events", bus)
                return
            if _wanted(event, instances, kinds):
                yield sse(event.kind.value, event.to_dict())
            if event.kind is EventKind.DAEMON and event.new == STOPPING:
                yield sse("end", {"ts": time.time(), "reason": "the daemon is stopping"})
                return
    finally:
        for pending in (on_bus, on_log):
            if pending is not None:
                pending.cancel()
        sub.close()
        if logs is not None:
            logs.close()


def _dropped(behind: str, bus: EventBus) -> bytes:
    return sse(
        "dropped",
        {
            "ts": time.time(),
            "reason": f"this client fell {behind} behind and was dropped",
            "dropped_total": bus.dropped_total,
        },
    )


def snapshot_of(sup: Supervisor) -> list[dict[str, Any]]:
    """Every instance: the daemon's actors, and the configured instances it has not
    needed an actor for yet (never started since the daemon started: stopped)."""
    now = time.time()
    rows = []
    for name in sorted(set(sup.actors) | set(sup.home.instance_names())):
        actor = sup.actors.get(name)
        row: dict[str, Any] = {"instance": name, "kind": "snapshot", "ts": now}
        if actor is None:
            row.update(state=State.STOPPED.value, health=Health.UNKNOWN.value)
            row.update(desired=Desired.STOPPED.value, pid=None, restart_count=0)
        else:
            snap = actor.snapshot
            row.update(state=snap.state.value, health=snap.health.value)
            row.update(desired=snap.desired.value, restart_count=snap.restart_count)
            row["pid"] = snap.pid
        rows.append(row)
    return rows


def events_router(sup: Supervisor, auth: list[Depends]) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/events", dependencies=auth, response_class=StreamingResponse)
    async def events(
        instance: Annotated[list[str] | None, Query(description="Names (repeat or a,b).")] = None,
        kinds: Annotated[list[str] | None, Query(description="Kinds (repeat or a,b).")] = None,
        logs: Annotated[
            str | None, Query(description="Also this instance's log lines, as `log` events.")
        ] = None,
        tail: Annotated[
            int, Query(ge=0, le=MAX_TAIL, description="With logs: its last N lines first.")
        ] = 0,
        hello: Annotated[
            bool, Query(description="First a `hello` event naming every kind sent.")
        ] = False,
    ) -> StreamingResponse:
        """Server-Sent Events: a snapshot of every instance, then each event as it
        happens (state, health, spawn, exit, adoption, refusal, config, request...),
        and with ``logs`` one instance's log lines as they are written."""
        names = split_values(instance or [])
        for name in [*names, *([logs] if logs is not None else [])]:
            problem = name_problem(name)
            if problem:
                raise HTTPException(400, problem)
        wanted = parse_kinds(kinds or [])
        if logs is None and LOG_KIND in split_values(kinds or []):
            raise HTTPException(400, "kind 'log' needs ?logs=NAME: whose log lines?")
        feed = _feed(sup, logs, tail) if logs is not None else None
        body = stream(
            sup.bus,
            lambda: snapshot_of(sup),
            instances=names or None,
            kinds=wanted,
            logs=feed,
            hello=hello,
        )
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(body, media_type="text/event-stream", headers=headers)

    return router


def _feed(sup: Supervisor, name: str, tail: int) -> LogFeed:
    actor = sup.actors.get(name)
    current = sup.configs.refresh(name)  # the file as it is now (None: no config)
    # the config of the server that runs, else the file's (when valid)
    loaded = actor.snapshot.loaded if actor is not None else None
    if loaded is None and isinstance(current, LoadedConfig):
        loaded = current
    known = actor is not None or current is not None
    try:
        files = log_files(sup.home, name, loaded, known)
    except UnknownInstance as e:
        raise HTTPException(404, str(e)) from None
    except RemoteLog as e:
        raise HTTPException(409, str(e)) from None
    return LogFeed(name, files, tail=tail)
