"""Relaying one instance response to the client as it arrives (issue 9, streaming).

``Relay`` is the upstream connection's sink: the head is rewritten (hop-by-hop headers
dropped, ``X-Llama-Orch-Instance`` added, SSE marked uncacheable and unbuffered) and each
body piece goes to the client in the same event-loop turn it came in. A body without a
length is re-framed as chunked. Nothing is held back except, when the daemon wants
request records, a bounded copy of a JSON answer (or the tail of a stream) to read
``usage``/``timings`` from afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from llama_orchestrator.gateway.errors import SERVER_ERROR, error_body
from llama_orchestrator.gateway.rename import Rename
from llama_orchestrator.gateway.server import HttpConnection, Request
from llama_orchestrator.gateway.streamcheck import StreamCheck

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
    }
)
# Not relayed either: llama-server's own CORS answer (it echoes any Origin, or sends an
# empty one); the gateway decides CORS itself (cors.py, issue 20).
DROPPED = HOP_BY_HOP | {b"access-control-allow-origin", b"access-control-allow-credentials"}
# Headers on_head looks at; the rest pass as they are.
SPECIAL = DROPPED | {b"content-type", b"content-length", b"cache-control", b"x-accel-buffering"}
SSE_HEADERS = b"Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n"
# A JSON answer longer than this is not copied for its usage figures.
CAPTURE_MAX = 1 << 20
# Of a stream, the last this many bytes are kept (the final chunk has the timings).
TAIL_MAX = 16 << 10
# An upstream error body wrapped into an already started stream is cut at this size.
ERROR_MAX = 64 << 10

NO_CAPTURE, CAPTURE_JSON, CAPTURE_TAIL = 0, 1, 2


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def sse_error(body: bytes, path: bytes = b"") -> bytes:
    """An error inside an SSE stream, in the stream's own format (issue 19): Anthropic's
    ``event: error`` on ``/v1/messages``, the Responses API's ``event: error`` on
    ``/v1/responses``, else OpenAI's ``data:`` event whose JSON has an ``error`` object.
    ``body`` is an error answer (ours or the instance's)."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        doc = None
    if not (isinstance(doc, dict) and isinstance(doc.get("error"), dict)):
        message = body.decode(errors="replace") if not isinstance(doc, dict) else json.dumps(doc)
        doc = {"error": {"message": message, "type": "server_error", "code": "upstream_error"}}
    if path.startswith(b"/v1/messages"):
        err = doc["error"]
        anthropic = {"type": "error", "error": {"type": "api_error", "message": err.get("message")}}
        return b"event: error\ndata: " + json.dumps(anthropic).encode() + b"\n\n"
    if path == b"/v1/responses":
        err = doc["error"]
        event = {"type": "error", "code": err.get("code"), "message": err.get("message")}
        return b"event: error\ndata: " + json.dumps(event).encode() + b"\n\n"
    return b"data: " + json.dumps(doc).encode() + b"\n\n"


def sse_fail(body: bytes, path: bytes = b"") -> bytes:
    """An error event that ends a chunked event stream whose 200 head is already out."""
    return chunk(sse_error(body, path)) + b"0\r\n\r\n"


class Relay:
    """Writes one upstream response to the client (the ``upstream.Sink``); calls
    ``on_done`` once, when the response is complete or the connection is lost."""

    __slots__ = (
        "_capture",
        "_captured",
        "_captured_len",
        "_check",
        "_chunked",
        "_client",
        "_err",
        "_head_only",
        "_http11",
        "_instance_header",
        "_keep_alive",
        "_now",
        "_out",
        "_path",
        "_rename",
        "_tail",
        "_wrap",
        "committed",
        "ended",
        "got_bytes",
        "head_at",
        "incomplete",
        "lost",
        "on_done",
        "sse",
        "status",
        "upstream_reusable",
    )

    def __init__(
        self,
        client: HttpConnection,
        req: Request,
        instance: str,
        *,
        committed: bool,
        capture: bool,
        now: Callable[[], float],
        on_done: Callable[[], None],
        rename: Rename | None = None,
        model: str | None = None,
    ) -> None:
        self._client = client
        # An event stream's end and Anthropic's first event are checked (streamcheck.py).
        self._check: StreamCheck | None = None
        if StreamCheck.watches(req.path):
            self._check = StreamCheck(req.path, model or instance)
        self._rename = rename  # the name the client asked for, into the answer (issue 20)
        self._head_only = req.method == b"HEAD"
        self._path = req.path
        self._keep_alive = req.keep_alive
        self._http11 = req.http11
        self._instance_header = b"X-Llama-Orch-Instance: " + instance.encode() + b"\r\n"
        self.committed = committed  # an SSE head is already out (the request waited)
        self._capture = CAPTURE_JSON if capture else NO_CAPTURE
        self._captured: list[bytes] = []
        self._captured_len = 0
        self._out: list[bytes] = []
        self._chunked = committed
        self.sse = committed  # the answer is an event stream
        self._tail = b""  # the last piece written of an event stream
        self._wrap = False
        self._err: list[bytes] = []
        self._now = now
        self.on_done = on_done
        self.ended = False
        self.status = 0
        self.head_at: float | None = None
        self.lost: str | None = None
        # Why a stream that ended cleanly was not whole (its instance ended it early).
        self.incomplete: str | None = None
        self.got_bytes = False
        self.upstream_reusable = False

    # -- Sink ----------------------------------------------------------------------------

    def on_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool
    ) -> None:
        if self.ended:
            return
        self.status = status
        self.head_at = self._now()
        self.upstream_reusable = keep_alive and not self._head_only
        if self.committed:
            # The client already has a 200 event stream: an error answer goes inside it.
            self._wrap = status >= 300
            if self._wrap:
                self._check = None
            if self._capture:
                self._capture = CAPTURE_TAIL
            return
        sse = False
        length = False
        held: list[bytes] = []  # cache headers, dropped when the answer is a stream
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
        for name, value in headers:
            lname = name.lower()
            if lname in SPECIAL:
                if lname in DROPPED:
                    continue
                if lname == b"content-type":
                    sse = value.startswith(b"text/event-stream")
                elif lname == b"content-length":
                    if self._rename is not None:
                        continue  # the renamed body has another length: sent chunked
                    length = True
                else:
                    held += (name, b": ", value, b"\r\n")
                    continue
            lines += (name, b": ", value, b"\r\n")
        if held and not sse:
            lines += held
        lines.append(self._instance_header)
        if self._client.cors:
            lines.append(self._client.cors)
        if sse:
            self.sse = True
            lines.append(SSE_HEADERS)
            # llama-server closes the connection after a stream: close it first, rather
            # than pool it and meet the close under the next request.
            self.upstream_reusable = False
            if self._capture:
                self._capture = CAPTURE_TAIL
        elif self._capture and not (200 <= status < 300):
            self._capture = NO_CAPTURE
        if not (sse and status == 200):
            self._check = None
        bodiless = self._head_only or status in (204, 304) or 100 <= status < 200
        if not length and not bodiless:
            if self._http11:
                lines.append(b"Transfer-Encoding: chunked\r\n")
                self._chunked = True
            else:
                self._client.must_close = True  # HTTP/1.0: the body ends with the connection
        if not self._keep_alive:
            self._client.must_close = True
        if self._client.must_close:
            lines.append(b"Connection: close\r\n")
        lines.append(b"\r\n")
        self._out.append(b"".join(lines))
        if self._head_only:
            # httptools would wait for the body a HEAD answer announces but never sends.
            self.upstream_reusable = False
            self.flush()
            self._end()

    def on_body(self, data: bytes) -> None:
        if self.ended:
            return
        if self._wrap:
            if sum(map(len, self._err)) < ERROR_MAX:
                self._err.append(data)
            return
        if self._rename is not None:
            data = self._rename.feed(data)
            if not data:
                return
        if self._check is not None:
            data = self._check.feed(data)
            if not data:
                return
        self._out.append(chunk(data) if self._chunked else data)
        self._tail = data
        cap = self._capture
        if cap == CAPTURE_JSON:
            self._captured_len += len(data)
            if self._captured_len > CAPTURE_MAX:
                self._capture = NO_CAPTURE
                self._captured.clear()
            else:
                self._captured.append(data)
        elif cap == CAPTURE_TAIL:
            self._captured.append(data)
            self._captured_len += len(data)
            kept = self._captured
            while len(kept) > 1 and self._captured_len - len(kept[0]) > TAIL_MAX:
                self._captured_len -= len(kept.pop(0))

    def flush(self) -> None:
        out = self._out
        if out:
            self._client.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def on_complete(self) -> None:
        if self.ended:
            return
        if self._wrap:
            self._out.append(chunk(sse_error(b"".join(self._err), self._path)))
        else:
            self._rest()
            if self._check is not None and not self._check.complete:
                self._end_incomplete()
        if self._chunked:
            self._out.append(b"0\r\n\r\n")
        self.flush()
        self._end()

    def on_lost(self, exc: Exception | None, got_bytes: bool) -> None:
        if self.ended:
            return
        self.got_bytes = got_bytes
        self.lost = str(exc) if exc else "the instance closed the connection"
        if not self._wrap:
            self._rest()
        self.flush()
        self._end()

    def _rest(self) -> None:
        """What the rename and the stream check still held, at the end of the body."""
        rest = self._rename.rest() if self._rename is not None else b""
        if self._check is not None:
            rest = self._check.feed(rest) + self._check.rest() if rest else self._check.rest()
        if rest:
            self._out.append(chunk(rest) if self._chunked else rest)
            self._tail = rest

    def _end_incomplete(self) -> None:
        """The instance ended a stream cleanly before its last event: say so in the
        stream, as for a cut one (the caller counts it as 502)."""
        self.incomplete = "the instance ended the stream before its final event"
        event = sse_error(
            error_body(
                f"the answer was cut off: {self.incomplete}", SERVER_ERROR, "upstream_error"
            ),
            self._path,
        )
        if self._tail and not self._tail.endswith((b"\n\n", b"\r\n\r\n")):
            event = b"\n\n" + event
        self._out.append(chunk(event) if self._chunked else event)

    def cut(self, message: str) -> bool:
        """End an event stream whose instance broke off mid-way with an error event in
        the stream's own format, so that the client sees it failed, never a stream that
        merely stopped (issue 19). False when the answer is no event stream: the client
        must then see a broken message (``HttpConnection.abort``)."""
        if not self.sse or self._wrap:
            return False
        event = sse_error(error_body(message, SERVER_ERROR, "upstream_error"), self._path)
        tail = self._tail
        if tail and not tail.endswith((b"\n\n", b"\r\n\r\n")):
            event = b"\n\n" + event  # the event the instance was writing ends, broken
        self._client.must_close = True
        self._client.write(chunk(event) + b"0\r\n\r\n" if self._chunked else event)
        return True

    def _end(self) -> None:
        self.ended = True
        self.on_done()

    # -- after ---------------------------------------------------------------------------

    def captured(self) -> tuple[int, bytes]:
        return self._capture, b"".join(self._captured)
