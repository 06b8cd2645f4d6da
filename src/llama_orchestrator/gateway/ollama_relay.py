"""Relaying llama-server's answer to an Ollama client (issue 20).

``OllamaRelay`` is the upstream connection's sink for an ``/api/*`` request: a streamed
answer's events become NDJSON lines as they arrive (each event is written in the turn it
came in; only a partial event waits for its end), a whole answer is read and translated
once. ``OllamaForward`` is the proxy path's ``Forward`` with this sink, errors in
Ollama's shape, and ``keep_alive: 0`` (the instance stopped once the answer is out).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from llama_orchestrator.gateway import ollama_translate as t
from llama_orchestrator.gateway.errors import GatewayError
from llama_orchestrator.gateway.forward import Forward, ForwardHost
from llama_orchestrator.gateway.proxy import CAPTURE_JSON, CAPTURE_MAX, CAPTURE_TAIL, chunk
from llama_orchestrator.gateway.router import Lease
from llama_orchestrator.gateway.server import HttpConnection, Request
from llama_orchestrator.gateway.upstream import UpstreamConnection

NDJSON = b"application/x-ndjson"


def ollama_error(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


def _line(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode() + b"\n"


class OllamaRelay:
    """The ``upstream.Sink`` of one Ollama request, with what ``Forward`` reads of a relay."""

    def __init__(
        self,
        client: HttpConnection,
        req: Request,
        instance: str,
        kind: int,
        model: str,
        stream: bool,
        on_done: Callable[[], None],
    ) -> None:
        self._client = client
        self._req = req
        self._instance = instance
        self._kind = kind
        self._model = model
        self._stream = stream
        self.on_done = on_done
        self._started_ns = time.monotonic_ns()
        self._body: list[bytes] = []
        self._size = 0
        self._pending = b""  # a partial event of a stream
        self._sse = False
        self._tail = b""  # the last events, for the request record's usage
        self._reason: str | None = None
        self._timings: Any = None
        self._calls: dict[int, dict[str, str]] = {}
        self._done_sent = False
        self.status = 0
        self.head_at: float | None = None
        self.lost: str | None = None
        self.incomplete: str | None = None  # its streams end as they translate (never set)
        self.got_bytes = False
        self.upstream_reusable = False
        self.ended = False
        self.committed = False

    def _head(self, status: int, content_type: bytes) -> bytes:
        close = b"Connection: close\r\n" if self._client.must_close else b""
        return (
            b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nTransfer-Encoding: chunked\r\n"
            b"X-Llama-Orch-Instance: %s\r\n%s%s\r\n"
            % (status, b"OK" if status == 200 else b"Error", content_type,
               self._instance.encode(), self._client.cors, close)
        )  # fmt: skip

    def on_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool
    ) -> None:
        self.status = status
        self.head_at = time.monotonic()
        self._sse = any(
            n.lower() == b"content-type" and v.startswith(b"text/event-stream") for n, v in headers
        )
        self.upstream_reusable = keep_alive and not self._sse
        if not self._req.keep_alive:
            self._client.must_close = True
        if self._sse and status == 200:
            self.committed = True
            self._client.write(self._head(200, NDJSON))

    def on_body(self, data: bytes) -> None:
        if self.ended:
            return
        if not (self._sse and self.committed):
            self._size += len(data)
            if self._size <= CAPTURE_MAX * 64:
                self._body.append(data)
            return
        data = self._pending + data
        *events, self._pending = data.split(b"\n\n")
        out = [line for event in events if (line := self._event(event))]
        if out:
            self._client.write(chunk(b"".join(out)))

    def _event(self, event: bytes) -> bytes:
        payload = event.strip()
        if not payload.startswith(b"data:"):
            return b""
        payload = payload[5:].strip()
        if payload == b"[DONE]":
            return self._final()
        self._tail = payload
        try:
            doc = json.loads(payload)
        except ValueError:
            return b""
        if "error" in doc:
            self._done_sent = True
            return _line({"error": t.error_message(payload)})
        self._timings = doc.get("timings") or self._timings
        choice = (doc.get("choices") or [{}])[0]
        self._reason = choice.get("finish_reason") or self._reason
        if self._kind == t.COMPLETE:
            text, thinking = choice.get("text") or "", ""
        else:
            delta = choice.get("delta") or {}
            text, thinking = delta.get("content") or "", delta.get("reasoning_content") or ""
            for call in delta.get("tool_calls") or ():
                slot = self._calls.setdefault(call.get("index", 0), {"name": "", "arguments": ""})
                fn = call.get("function") or {}
                slot["name"] += fn.get("name") or ""
                slot["arguments"] += fn.get("arguments") or ""
        if not text and not thinking:
            return b""
        return _line(t.piece(self._kind, self._model, text, thinking))

    def _final(self) -> bytes:
        if self._done_sent:
            return b""
        self._done_sent = True
        calls = t.tool_calls([{"function": c} for _, c in sorted(self._calls.items())])
        total = time.monotonic_ns() - self._started_ns
        doc = t.final(self._kind, self._model, self._reason, self._timings, total, calls=calls)
        return _line(doc)

    def flush(self) -> None:
        pass  # each piece is written as it is translated

    def on_complete(self) -> None:
        if self.ended:
            return
        client = self._client
        if self.committed:
            rest = self._event(self._pending) + self._final()
            client.write((chunk(rest) if rest else b"") + b"0\r\n\r\n")
        else:
            body = b"".join(self._body)
            if 200 <= self.status < 300:
                try:
                    total = time.monotonic_ns() - self._started_ns
                    doc = t.whole(self._kind, self._model, body, total)
                except (ValueError, AttributeError, TypeError, IndexError) as e:
                    self.status = 502
                    out = ollama_error(f"the instance's answer could not be read: {e}")
                else:
                    out = json.dumps(doc).encode()
            else:
                out = ollama_error(t.error_message(body))
            inst = b"X-Llama-Orch-Instance: " + self._instance.encode() + b"\r\n"
            client.respond(self.status, out, extra_headers=inst)
        self._end()

    def on_lost(self, exc: Exception | None, got_bytes: bool) -> None:
        if self.ended:
            return
        self.got_bytes = got_bytes
        self.lost = str(exc) if exc else "the instance closed the connection"
        self._end()

    def cut(self, message: str) -> bool:
        """A stream whose instance broke off mid-way ends with Ollama's error line
        (``Forward`` asks; issue 19). False when no stream was started."""
        if not (self._sse and self.committed):
            return False
        self._client.must_close = True
        self._client.write(chunk(_line({"error": message})) + b"0\r\n\r\n")
        return True

    def _end(self) -> None:
        self.ended = True
        self.on_done()

    def captured(self) -> tuple[int, bytes]:
        if self._sse:
            return CAPTURE_TAIL, b"data: " + self._tail + b"\n\n"
        return CAPTURE_JSON, b"".join(self._body)


class OllamaForward(Forward):
    """``Forward`` for an ``/api/*`` request: the Ollama sink, Ollama's error shape."""

    __slots__ = ("_keep", "_kind", "_unloads")

    def __init__(
        self,
        gw: ForwardHost,
        req: Request,
        conn: HttpConnection,
        lease: Lease,
        model: str,
        url: bytes,
        stream: bool,
        kind: int,
        keep: int | None,
        unloads: set[asyncio.Task[Any]],
    ) -> None:
        super().__init__(gw, req, conn, lease, model, url, stream, False)
        self._kind = kind
        self._keep = keep  # keep_alive in seconds (0: unload; negative: forever)
        self._unloads = unloads

    def _send(self, up: UpstreamConnection, reused: bool) -> None:
        self._up = up
        self._reused = reused
        assert self._model is not None
        self._relay = relay = OllamaRelay(  # type: ignore[assignment]
            self._conn,
            self._req,
            self._lease.instance.name,
            self._kind,
            self._model,
            self._stream,
            self._relay_done,
        )
        conn = self._conn
        conn.flow = up
        up.send(self._data, relay)
        if conn.write_paused:
            up.pause_reading()

    def _answer_error(self, err: GatewayError, extra_headers: bytes) -> None:
        relay = self._relay
        if relay is not None and relay.committed:
            self._conn.write(chunk(_line({"error": err.message})) + b"0\r\n\r\n")
        else:
            self._conn.respond(err.status, ollama_error(err.message), extra_headers=extra_headers)

    def _finish(
        self, status: int, error: str | None, ttfb: float | None = None, usage: Any = None
    ) -> None:
        finished = self._finished
        if usage is None:
            super()._finish(status, error, ttfb)
        else:
            super()._finish(status, error, ttfb, usage)
        keep = self._keep
        if finished or keep is None:
            return
        inst = self._lease.instance
        if keep:
            inst.keep_alive(max(0, keep))  # idle ttl from now; 0 there: never idle-stopped
        else:
            # keep_alive 0: stopped once the answer is out, as Ollama unloads it.
            task = asyncio.get_running_loop().create_task(inst.unload("keep_alive 0"))
            self._unloads.add(task)
            task.add_done_callback(self._unloads.discard)
