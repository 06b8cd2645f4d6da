"""One parsed client request, as the gateway's handlers see it (``server`` builds it),
and the limits on what a client may send (issue 19)."""

from __future__ import annotations

from http import HTTPStatus

import httptools

# The request target's limit (414): llama-server's own URL parser stops at 64 KiB.
MAX_URL_BYTES = 64 * 1024
# All header lines of one request together (431). httptools gathers a header value whole
# before it calls back, so the bytes of a head still arriving are bounded too.
MAX_HEADER_BYTES = 64 * 1024
# A request whose bytes stop arriving for this long is answered 408 and closed.
RECEIVE_TIMEOUT_S = 60.0
# After refusing a request still being sent, what it sends is read and dropped this long
# before the close: closing on unread data resets the connection, which can destroy the
# answer before the client reads it.
LINGER_S = 2.0


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
            try:
                parsed = httptools.parse_url(url)
            except httptools.HttpParserInvalidURLError:
                raise ValueError(f"the request target {url[:80]!r} is not a valid URL") from None
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
