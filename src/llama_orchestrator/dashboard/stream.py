"""The dashboard's live feed: the daemon's ``GET /v1/events``, and how an event changes
the table (issue 12).

While the daemon runs, the dashboard follows its event stream instead of polling the
records: a state or health change is applied to its row at once; what an event does
not carry (a new pid's start time, the config's columns, a new instance) is read from
the records once, when such an event arrives. Blocking reads, for a thread worker;
``close()`` from any thread ends them.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from llama_orchestrator.daemon.events import EventKind
from llama_orchestrator.engine.states import ALIVE
from llama_orchestrator.errors import OrchestratorError

if TYPE_CHECKING:
    import http.client

    from llama_orchestrator.client.control import Client

READ_TIMEOUT_S = 60.0  # the daemon sends a keep-alive every 15 s
# Every kind of the bus but request activity and log rotations: they change nothing the
# table shows.
KINDS = tuple(k.value for k in EventKind if k not in (EventKind.REQUEST, EventKind.LOG_ROTATED))
_ALIVE = frozenset(s.value for s in ALIVE)


class StreamError(OrchestratorError, OSError):
    """The daemon refused the stream (its answer, in words)."""


class EventStream:
    def __init__(self, connect: Callable[[], Client | None]) -> None:
        self.connect = connect  # the running daemon's client; None when none runs
        self._conn: http.client.HTTPConnection | None = None
        self._closed = threading.Event()

    def events(self) -> Iterator[dict[str, Any]]:
        """Each event's data, with ``kind`` set (``end``, ``dropped`` included), until
        the stream ends or ``close()``; nothing when no daemon runs."""
        import http.client

        client = self.connect()
        if client is None:
            return
        conn = http.client.HTTPConnection(client.host, client.port, timeout=READ_TIMEOUT_S)
        self._conn = conn
        try:
            if self._closed.is_set():
                return
            conn.request(
                "GET",
                "/v1/events?" + urlencode({"kinds": ",".join(KINDS)}),
                headers={
                    "Authorization": f"Bearer {client.token}",
                    "Accept": "text/event-stream",
                },
            )
            # close() may have run before the socket existed (it then had none to shut
            # down): the flag it set first is seen here, or at the next line read (the
            # daemon's keep-alives keep the reads returning).
            if self._closed.is_set():
                return
            resp = conn.getresponse()
            if resp.status != 200:
                raise StreamError(f"the daemon answered {resp.status} to /v1/events")
            name, data = "message", []
            for raw in iter(resp.readline, b""):
                if self._closed.is_set():
                    return
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip())
                elif not line and data:
                    event = json.loads("\n".join(data))
                    event.setdefault("kind", name)
                    yield event
                    name, data = "message", []
        except OSError:
            if not self._closed.is_set():
                raise
        finally:
            conn.close()

    def close(self) -> None:
        self._closed.set()
        conn = self._conn
        if conn is not None and conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)  # a blocked read returns at once


def apply_event(rows: list[dict[str, Any]], event: dict[str, Any]) -> bool:
    """Apply ``event`` to the table's ``rows``; True when the records should be read
    for what the event does not carry."""
    kind, name = event.get("kind"), event.get("instance")
    row = next((r for r in rows if r["name"] == name), None)
    if kind not in ("snapshot", "state", "health"):
        return kind not in ("end", "dropped", "daemon")
    if row is None:
        return True  # an instance the table does not know yet
    if kind == "health":
        row["health"] = event.get("new")
        return False
    status = event.get("state") if kind == "snapshot" else event.get("new")
    row["status"] = status
    if kind == "snapshot":
        row.update(health=event.get("health"), pid=event.get("pid"))
        row.update(restarts=event.get("restart_count", row.get("restarts", 0)))
    if status not in _ALIVE:
        row.update(pid=None, uptime_s=None, since=None)
    return False
