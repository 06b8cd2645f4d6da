"""The client side of the gateway: an asyncio protocol that parses HTTP/1.1 with httptools.

One ``HttpConnection`` per client socket. It parses requests (keep-alive, pipelining,
chunked bodies, ``Expect: 100-continue``), bounds the URL (414), the headers (431) and the
body (413), and hands each complete request to the handler, one at a time per connection.
The handler answers at once (and returns None), hands the request to an ``Active`` driven
by callbacks (and returns ``PENDING``: the proxy's fast path, no task), or returns a
coroutine, which runs as a task (a request that has to wait). A client that disconnects
cancels that task and tells the ``Active``, which is how a queued request is dropped at
once and an upstream request closed (issue 9, cancellation). Write pressure from a slow
client pauses the upstream reader (``flow``), so a stream is relayed without buffering it
whole.

A ``gate`` sees each request at the end of its headers: one it refuses (no key, a foreign
``Host``) is answered at once, and its body is discarded, never held (issue
19: a 96 MiB header without a key used to be read whole, then answered 200). A connection
whose request stops arriving for ``RECEIVE_TIMEOUT_S`` gets 408; one that sends, however
slowly, is never cut.

No framework sits on this path: a per-request middleware stack costs more than the whole
proxy budget, and Starlette's ``BaseHTTPMiddleware`` hides client disconnects.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, cast

import httptools

from llama_orchestrator.errors import OrchestratorError
from llama_orchestrator.gateway.errors import (
    error_body,
    header_too_large,
    receive_timed_out,
    too_large,
    url_too_long,
)
from llama_orchestrator.gateway.request import (
    LINGER_S,
    MAX_HEADER_BYTES,
    MAX_URL_BYTES,
    RECEIVE_TIMEOUT_S,
    reason,
)
from llama_orchestrator.gateway.request import Request as Request

log = logging.getLogger(__name__)

# Pipelined requests held while one is answered; past this, reading pauses.
MAX_PIPELINED = 8


class _Refused(OrchestratorError):
    """Raised from a parser callback to stop parsing; ``HttpConnection._refusal`` holds
    the answer."""


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
# Told each request at the end of its headers (its body still empty): True when the
# handler will refuse it whatever its body, which is then never read.
Gate = Callable[[Request], bool]


class HttpConnection(asyncio.Protocol):
    def __init__(
        self,
        handler: Handler,
        max_body: int,
        now: Callable[[], float],
        registry: set[HttpConnection],
        gate: Gate | None = None,
    ) -> None:
        self._handler = handler
        self._gate = gate
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
        self._receiving = False  # a request's bytes are arriving (headers or body)
        self._received = 0  # bytes read, for the sweeper to see a slow upload progress
        self._progress: tuple[int, float] | None = None  # (bytes, when) at the last sweep
        self._refusal: tuple[int, bytes] | None = None
        self._chunk = 0  # the length of the data being parsed
        self._reset_message()

    @property
    def idle(self) -> bool:
        """Between requests (nothing being answered, nothing pipelined, nothing arriving)."""
        return self._current is None and not self._pending and not self._receiving

    def sweep(self, now: float, keepalive_timeout: float) -> None:
        """Called every few seconds: close a connection idle between requests for longer
        than ``keepalive_timeout``; answer 408 to a request that sent no byte for
        ``RECEIVE_TIMEOUT_S`` (one that sends, however slowly, goes on)."""
        if self.idle:
            if self.idle_since < now - keepalive_timeout:
                self.close()
            return
        if not self._receiving or self._current is not None:
            self._progress = None
            return
        if self._progress is None or self._progress[0] != self._received:
            self._progress = (self._received, now)
        elif now - self._progress[1] >= RECEIVE_TIMEOUT_S:
            if self._answered:  # refused at its headers; the body it owes never came
                self.close()
            else:
                self._refuse(408, receive_timed_out(RECEIVE_TIMEOUT_S))

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they have its methods.
        self.transport = cast(asyncio.Transport, transport)
        self._registry.add(self)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return  # refused and lingering: dropped
        self._received += len(data)
        self._chunk = len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail_parse(b"protocol upgrades are not supported")
            return
        except httptools.HttpParserError as e:
            if self._refusal is not None:
                self._refuse(*self._refusal)
            else:
                self._fail_parse(str(e).encode(errors="replace"))
            return
        if self._in_head:
            # Bytes of a head still arriving: httptools holds a partial header value
            # itself, so it is bounded here, before the callbacks see it (counted from the
            # chunk after the one the request began in).
            self._head_bytes += len(data)
            if self._head_bytes > MAX_URL_BYTES + MAX_HEADER_BYTES:
                self._refuse(431, header_too_large(MAX_HEADER_BYTES))

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
        self._header_bytes = 0
        self._head_bytes = 0
        self._in_head = False
        self._body: list[bytes] = []
        self._body_len = 0
        self._too_large = False
        self._request: Request | None = None
        self._gated = False  # refused by its headers: its body is discarded
        self._answered = False  # answered at the end of its headers

    def on_message_begin(self) -> None:
        self._reset_message()
        self._in_head = self._receiving = True
        self._head_bytes = -self._chunk

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > MAX_URL_BYTES:
            self._refusal = (414, url_too_long(len(self._url), MAX_URL_BYTES))
            raise _Refused

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4  # ": " and CRLF
        if self._header_bytes > MAX_HEADER_BYTES:
            self._refusal = (431, header_too_large(MAX_HEADER_BYTES))
            raise _Refused
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        keep_alive = self._parser.should_keep_alive()
        http11 = self._parser.get_http_version() == "1.1"
        try:
            req = Request(
                self._parser.get_method(), self._url, self._headers, b"", keep_alive, http11, 0.0
            )
        except ValueError as e:
            self._refusal = (400, error_body(str(e), "invalid_request_error", "bad_request"))
            raise _Refused from None
        self._request = req
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
        elif self._gate is not None and self._gate(req):
            self._gated = True
            if self._current is None and not self._pending:
                # Answered now, before its body; the body that follows is discarded.
                self._answered = True
                req.started = self._now()
                self._pending.append(req)
                self._run_next()
        elif expect and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self._too_large:
            return  # discarded; the 413 is out and the connection closes at the end
        self._body_len += len(body)
        if self._body_len > self._max_body:
            self._too_large = True
            self._body.clear()
            if self._answered:  # refused at its headers, answered: nothing more to say
                self.must_close = True
                self._linger()
            else:
                self._reject_too_large()
            return
        if not self._gated:  # a refused request's body is never held
            self._body.append(body)

    def on_message_complete(self) -> None:
        self._receiving = False
        self._progress = None
        if self._too_large or self._answered:
            if self.transport is not None and self._current is None and self.must_close:
                self.transport.close()
                self.closed = True
            return
        req = self._request
        assert req is not None
        req.body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        req.started = self._now()
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
        if not req.keep_alive:
            self.must_close = True
        if self.must_close and self._receiving and self._answered:
            return  # its body still arriving (refused by its headers): closed once it is in
        if self.must_close and self.transport is not None:
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

    def _refuse(self, status: int, body: bytes) -> None:
        """Answer a request that cannot be read (its URL or head too long, its bytes
        stopped) and close: nothing after it on this connection can be parsed."""
        self._refusal = None
        transport = self.transport
        if transport is None or self.closed:
            return
        self.closed = True
        if self._current is not None:
            transport.close()
            return
        head = (
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n" % (status, reason(status), len(body))
        )
        transport.write(head + body)
        self._linger()

    def _linger(self) -> None:
        """Close once the client has read what it was sent: end our side now, drop what
        it still sends (``closed``), and close after ``LINGER_S``."""
        transport = self.transport
        if transport is None:
            return
        self.closed = True
        if transport.can_write_eof():
            transport.write_eof()
        asyncio.get_running_loop().call_later(LINGER_S, transport.close)

    def _fail_parse(self, why: bytes) -> None:
        message = "malformed HTTP request: " + why.decode(errors="replace")
        self._refuse(400, error_body(message, "invalid_request_error", "bad_request"))
