"""The client side of the gateway: an asyncio protocol that parses HTTP/1.1 with httptools.

One ``HttpConnection`` per client socket. It parses requests (keep-alive, pipelining,
chunked bodies, ``Expect: 100-continue``), bounds the body (413), and hands each complete
request to the handler, one at a time per connection. The handler answers at once (and
returns None), hands the request to an ``Active`` driven by callbacks (and returns
``PENDING``: the proxy's fast path, no task), or returns a coroutine, which runs as a task
(a request that has to wait). A client that disconnects cancels that task and tells the
``Active``, which is how a queued request is dropped at once and an upstream request closed
(issue 9, cancellation). Write pressure from a slow client pauses the upstream reader
(``flow``), so a stream is relayed without buffering it whole.

No framework sits on this path: a per-request middleware stack costs more than the whole
proxy budget, and Starlette's ``BaseHTTPMiddleware`` hides client disconnects.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Any, Protocol, cast

import httptools

from llama_orchestrator.gateway.errors import error_body, too_large

log = logging.getLogger(__name__)

# Pipelined requests held while one is answered; past this, reading pauses.
MAX_PIPELINED = 8


def reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Unknown"


class Request:
    """One parsed request. Header names are kept as received; ``header()`` ignores case."""

    __slots__ = (
        "body",
        "headers",
        "http11",
        "keep_alive",
        "method",
        "path",
        "query",
        "started",
        "url",
    )

    def __init__(
        self,
        method: bytes,
        url: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        keep_alive: bool,
        http11: bool,
        started: float,
    ) -> None:
        self.method = method
        self.url = url
        self.path: bytes
        self.query: bytes | None
        if url[:1] == b"/" and b"?" not in url and b"%" not in url:
            self.path, self.query = url, None  # the common case, without a parse
        else:
            parsed = httptools.parse_url(url)
            self.path = parsed.path or b"/"
            self.query = parsed.query
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.http11 = http11
        self.started = started

    def header(self, lower_name: bytes) -> bytes | None:
        for name, value in self.headers:
            if name.lower() == lower_name:
                return value
        return None


class Flow(Protocol):
    """What a slow client pauses: the reader of the upstream response being relayed."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class Active(Protocol):
    """A request answered by callbacks (the proxy's fast path): told when the client goes,
    and calls ``HttpConnection.request_done`` itself when it ends."""

    def client_lost(self) -> None: ...


class _Pending:
    def __repr__(self) -> str:
        return "PENDING"


# Returned by a handler (or by its coroutine) whose request goes on in an ``Active``.
PENDING: Any = _Pending()

Handler = Callable[[Request, "HttpConnection"], "Coroutine[Any, Any, Any] | _Pending | None"]


class HttpConnection(asyncio.Protocol):
    def __init__(
        self,
        handler: Handler,
        max_body: int,
        now: Callable[[], float],
        registry: set[HttpConnection],
    ) -> None:
        self._handler = handler
        self._max_body = max_body
        self._now = now
        self._registry = registry
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._pending: collections.deque[Request] = collections.deque()
        self._task: asyncio.Task[Any] | None = None
        self.active: Active | None = None
        self._current: Request | None = None
        self.closed = False
        self.must_close = False
        self.write_paused = False
        self.flow: Flow | None = None
        self.idle_since = now()
        # The current request's CORS headers, in every answer head (issue 20, cors.py).
        self.cors = b""
        self._reading_paused = False
        self._late_413 = False
        self._reset_message()

    @property
    def idle(self) -> bool:
        """Between requests (nothing being answered, nothing pipelined)."""
        return self._current is None and not self._pending

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they have its methods.
        self.transport = cast(asyncio.Transport, transport)
        self._registry.add(self)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail_parse(b"protocol upgrades are not supported")
        except httptools.HttpParserError as e:
            self._fail_parse(str(e).encode(errors="replace"))

    def eof_received(self) -> bool | None:
        return None  # a half-closed client is gone: close, which cancels its request

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._registry.discard(self)
        self._pending.clear()
        if self.active is not None:
            self.active.client_lost()
        if self._task is not None:
            self._task.cancel()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.flow is not None:
            self.flow.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.flow is not None:
            self.flow.resume_reading()

    # -- httptools callbacks ---------------------------------------------------------------

    def _reset_message(self) -> None:
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._body_len = 0
        self._too_large = False

    def on_message_begin(self) -> None:
        self._reset_message()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._keep_alive = self._parser.should_keep_alive()
        self._http11 = self._parser.get_http_version() == "1.1"
        expect = False
        for name, value in self._headers:
            lname = name.lower()
            if lname == b"content-length":
                try:
                    if int(value) > self._max_body:
                        self._too_large = True
                except ValueError:
                    pass
            elif lname == b"expect" and value.lower() == b"100-continue":
                expect = True
        if self._too_large:
            # Answer before the body is sent; the connection closes after it.
            self._reject_too_large()
        elif expect and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self._too_large:
            return  # discarded; the 413 is out and the connection closes at the end
        self._body_len += len(body)
        if self._body_len > self._max_body:
            self._too_large = True
            self._body.clear()
            self._reject_too_large()
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._too_large:
            if self.transport is not None and self._current is None:
                self.transport.close()
            return
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        req = Request(
            self._parser.get_method(),
            self._url,
            self._headers,
            body,
            self._keep_alive,
            self._http11,
            self._now(),
        )
        self._pending.append(req)
        if self._current is None:
            self._run_next()
        elif len(self._pending) >= MAX_PIPELINED and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    # -- dispatch ------------------------------------------------------------------------

    def _run_next(self) -> None:
        while self._pending and not self.closed:
            req = self._pending.popleft()
            self._current = req
            try:
                result = self._handler(req, self)
            except Exception:
                log.exception("gateway handler failed")
                self._internal_error()
                result = None
            if result is PENDING:
                return  # the Active calls request_done
            if result is not None:
                assert not isinstance(result, _Pending)
                self._task = asyncio.get_running_loop().create_task(result)
                self._task.add_done_callback(self._task_done)
                return
            self._finish_request(req)
        if self._reading_paused and not self.closed and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if self._task is task:
            self._task = None
        if not task.cancelled():
            exc = task.exception()
            if exc is not None:
                log.error("gateway request failed", exc_info=exc)
                if self.active is None:
                    self._internal_error()
            elif task.result() is PENDING:
                return  # handed to an Active, which calls request_done
        if self.active is None:
            self.request_done()

    def request_done(self) -> None:
        """The current request is answered: close or go on with the next one."""
        self.active = None
        req = self._current
        if req is not None:
            self._finish_request(req)
        self._run_next()

    def _finish_request(self, req: Request) -> None:
        self._current = None
        self.flow = None
        self.cors = b""
        self.idle_since = self._now()
        if self._late_413:
            self._late_413 = False
            self._reject_too_large()
        if (self.must_close or not req.keep_alive) and self.transport is not None:
            self.transport.close()
            self.closed = True

    # -- writing -------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def abort(self) -> None:
        """Drop the connection without finishing the response (an upstream that broke
        mid-response: the client must see a truncated message, not a complete one)."""
        self.must_close = True
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def respond(
        self,
        status: int,
        body: bytes,
        content_type: bytes = b"application/json",
        extra_headers: bytes = b"",
        head_only: bool = False,
    ) -> None:
        req = self._current
        if req is not None and not req.keep_alive:
            self.must_close = True
        close = b"Connection: close\r\n" if self.must_close else b""
        head = b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s%s%s\r\n" % (
            status,
            reason(status),
            content_type,
            len(body),
            extra_headers,
            self.cors,
            close,
        )
        self.write(head if head_only else head + body)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _internal_error(self) -> None:
        self.must_close = True
        body = (
            b'{"error": {"message": "internal gateway error", "type": "server_error", '
            b'"code": "internal_error"}}'
        )
        self.respond(500, body)

    def _reject_too_large(self) -> None:
        self.must_close = True
        if self._current is not None:
            # Pipelined behind a request still being answered: the 413 waits its turn.
            self._pending.clear()
            self._late_413 = True
            return
        body = too_large(self._max_body)
        head = (
            b"HTTP/1.1 413 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n" % (reason(413), len(body))
        )
        self.write(head + body)

    def _fail_parse(self, why: bytes) -> None:
        if self.transport is None or self.closed:
            return
        body = error_body(
            "malformed HTTP request: " + why.decode(errors="replace"),
            "invalid_request_error",
            "bad_request",
        )
        if self._current is None:
            head = (
                b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
            )
            self.transport.write(head + body)
        self.transport.close()
        self.closed = True
