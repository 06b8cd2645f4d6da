"""One parsed client request, as the gateway's handlers see it (``server`` builds it)."""

from __future__ import annotations

from http import HTTPStatus

import httptools


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
