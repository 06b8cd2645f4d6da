"""A small pooled HTTP/1.1 client for the instances, on asyncio protocols and httptools.

One ``Target`` per instance address keeps its idle keep-alive connections (at most one per
slot; issue 9, principle 15). A connection parses the response with httptools and hands
its pieces to a ``Sink`` as they arrive: nothing is buffered here, so the proxy relays a
stream chunk by chunk. Idle connections are dropped before llama-server's own keep-alive
timeout (5 s in cpp-httplib) would close them under a request; a reused connection that
closes before any byte of its response came back is retried once by the caller.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
import time
from typing import Protocol, cast
from urllib.parse import urlsplit

import httptools

from llama_orchestrator.errors import OrchestratorError

# Idle connections older than this are not reused (cpp-httplib closes them after 5 s).
IDLE_TTL = 4.0


class Sink(Protocol):
    """Receives one response. ``flush`` is called after each batch of socket data."""

    def on_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool
    ) -> None: ...

    def on_body(self, data: bytes) -> None: ...

    def on_complete(self) -> None: ...

    def on_lost(self, exc: Exception | None, got_bytes: bool) -> None: ...

    def flush(self) -> None: ...


class UpstreamError(OrchestratorError):
    """The instance could not be reached, or broke the connection."""


class UpstreamConnection(asyncio.Protocol):
    def __init__(self, target: Target) -> None:
        self.target = target
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.sink: Sink | None = None
        self.closed = False
        self.got_bytes = False
        self.idle_since = 0.0
        self.keep_alive = True
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._reading_paused = False

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        sink = self.sink
        if sink is None:
            # Bytes on an idle connection: not a response to anything we sent. Drop it.
            self.abort()
            return
        self.got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as e:
            self.sink = None
            self.abort()
            sink.on_lost(UpstreamError(f"malformed response from the instance: {e}"), True)
            return
        sink.flush()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.target.discard(self)
        sink, self.sink = self.sink, None
        if sink is not None:
            sink.on_lost(exc, self.got_bytes)

    # -- httptools callbacks -----------------------------------------------------------

    def on_message_begin(self) -> None:
        self._headers = []

    def on_status(self, status: bytes) -> None:
        self._reason = status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.keep_alive = self._parser.should_keep_alive()
        if self.sink is not None:
            status = self._parser.get_status_code()
            self.sink.on_head(status, self._reason, self._headers, self.keep_alive)

    def on_body(self, body: bytes) -> None:
        if self.sink is not None:
            self.sink.on_body(body)

    def on_message_complete(self) -> None:
        sink, self.sink = self.sink, None
        if sink is not None:
            sink.flush()
            sink.on_complete()

    # -- use -----------------------------------------------------------------------------

    def send(self, data: bytes, sink: Sink) -> None:
        assert self.transport is not None
        self.sink = sink
        self.got_bytes = False
        self.transport.write(data)

    def pause_reading(self) -> None:
        if self.transport is not None and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()

    def reusable(self, now: float) -> bool:
        return (
            not self.closed
            and self.sink is None
            and self.keep_alive
            and self.transport is not None
            and not self.transport.is_closing()
            and now - self.idle_since < IDLE_TTL
        )

    def abort(self) -> None:
        """Close at once (a reset, not a graceful close): llama-server sees the client go
        and frees the slot."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Target:
    """One instance address and its idle connections (most recently used first)."""

    def __init__(self, base_url: str, connect_timeout: float) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"unsupported instance address {base_url!r} (want http://host:port)")
        self.base_url = base_url
        self.host = parts.hostname
        # https: a remote instance behind TLS (issue 13), verified against the system's CAs
        self.tls = ssl.create_default_context() if parts.scheme == "https" else None
        self.port = parts.port or (443 if self.tls else 80)
        self.host_header = parts.netloc.encode()
        self.connect_timeout = connect_timeout
        self._idle: collections.deque[UpstreamConnection] = collections.deque()
        self.open = 0
        self._warming: asyncio.Task[None] | None = None

    def take(self) -> UpstreamConnection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.reusable(now):
                return conn
            conn.close()
        return None

    def put(self, conn: UpstreamConnection, max_idle: int) -> None:
        if conn.closed:
            return
        if len(self._idle) >= max_idle:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    def discard(self, conn: UpstreamConnection) -> None:
        self.open -= 1
        with contextlib.suppress(ValueError):
            self._idle.remove(conn)

    @property
    def idle(self) -> int:
        return len(self._idle)

    async def connect(self) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: UpstreamConnection(self), self.host, self.port, ssl=self.tls
                ),
                self.connect_timeout,
            )
        except asyncio.TimeoutError:
            raise UpstreamError(
                f"no connection to {self.base_url} within {self.connect_timeout:g} s"
            ) from None
        except OSError as e:
            raise UpstreamError(f"cannot connect to {self.base_url}: {e.strerror or e}") from None
        self.open += 1
        return conn

    def prewarm(self) -> None:
        """Open a connection for the next request in the background, when none is idle:
        llama-server closes the connection after every stream, and a stream should not
        wait for a connect."""
        if self._warming is None and not self._idle:
            self._warming = asyncio.get_running_loop().create_task(self._warm())

    async def _warm(self) -> None:
        try:
            conn = await self.connect()
        except UpstreamError:
            return
        finally:
            self._warming = None
        self.put(conn, 1)

    def close(self) -> None:
        if self._warming is not None:
            self._warming.cancel()
        while self._idle:
            self._idle.pop().close()


class Upstreams:
    """Every instance address the gateway has talked to."""

    def __init__(self, connect_timeout: float) -> None:
        self.connect_timeout = connect_timeout
        self._targets: dict[str, Target] = {}

    def target(self, base_url: str) -> Target:
        t = self._targets.get(base_url)
        if t is None:
            t = self._targets[base_url] = Target(base_url, self.connect_timeout)
        return t

    def close(self) -> None:
        for t in self._targets.values():
            t.close()
        self._targets.clear()
