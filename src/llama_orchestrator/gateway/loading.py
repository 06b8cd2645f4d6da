"""The ``: loading`` keep-alive of a streaming request that waits (issue 9, on-demand).

Once it is clear that the request waits (at once for a start, after one interval for a
slot), a 200 event stream is opened and ``: loading`` comments keep it alive, so proxies
and clients do not time out. The answer, or an error, then goes inside that stream.
"""

from __future__ import annotations

from llama_orchestrator.gateway.proxy import SSE_HEADERS, chunk
from llama_orchestrator.gateway.server import HttpConnection

LOADING = chunk(b": loading\n\n")


def sse_head(instance: str | None, close: bool, cors: bytes = b"") -> bytes:
    inst = b"X-Llama-Orch-Instance: %s\r\n" % instance.encode() if instance else b""
    conn = b"Connection: close\r\n" if close else b""
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        + SSE_HEADERS
        + inst
        + cors
        + b"Transfer-Encoding: chunked\r\n"
        + conn
        + b"\r\n"
    )


class LoadingStream:
    """The ``router.WaitListener`` of a streaming request; ``committed`` once its event
    stream is open (what follows must go inside it)."""

    def __init__(self, conn: HttpConnection, close: bool) -> None:
        self._conn = conn
        self._close = close
        self._instance: str | None = None
        self.committed = False

    def waiting(self, instance: str | None, starting: bool) -> None:
        self._instance = instance
        if starting:
            self.tick()

    def tick(self) -> None:
        if not self.committed:
            self.committed = True
            if self._close:
                self._conn.must_close = True
            self._conn.write(sse_head(self._instance, self._close, self._conn.cors) + LOADING)
        else:
            self._conn.write(LOADING)
