"""CORS: which pages in a browser may call the gateway, and what they are told (issue 20).

A browser sends ``Origin`` with every cross-origin request and asks first (a preflight:
``OPTIONS`` with ``Access-Control-Request-Method``) before a ``fetch`` with JSON or an
``Authorization`` header. Allowed origins are:

* pages on this machine (``http://localhost:3000``, ``http://127.0.0.1:5173``, ...);
* ``gateway.json`` ``allowed_origins`` (browser apps of other sites; ``"*"``: any);
* with API keys set, any origin: the key is what admits a request, so a page of any site
  that holds one may use it (its preflight carries no key, so it is answered for all).

Without keys a page of another site is refused (403) before anything runs: any page the
user opens could otherwise use every model. An allowed origin's answers carry
``Access-Control-Allow-Origin`` (its own origin, with ``Vary: Origin``) and expose the
gateway's headers (``X-Llama-Orch-Instance``, ``Retry-After``) to the page's script.
"""

from __future__ import annotations

from llama_orchestrator.gateway.inbound import is_loopback
from llama_orchestrator.gateway.server import Request

# A preflight's answer is cached by the browser this long (Chrome caps it at 2 hours).
MAX_AGE_S = 7200
METHODS = b"GET, POST, HEAD, OPTIONS"
# Asked for when a preflight names none; clients send these (the SDKs add their own
# x-stainless-* and anthropic-* headers, which a preflight then names).
HEADERS = b"Authorization, Content-Type, X-Api-Key, Anthropic-Version, OpenAI-Organization"
EXPOSED = b"X-Llama-Orch-Instance, Retry-After"


def is_preflight(req: Request) -> bool:
    """A browser's question before a cross-origin request: answered without a key (it
    never carries one), by ``Gateway._cors``."""
    return req.method == b"OPTIONS" and req.header(b"access-control-request-method") is not None


def _host_of(origin: str) -> str:
    netloc = origin.partition("://")[2]
    if netloc.startswith("["):
        return netloc[1 : netloc.find("]")] if "]" in netloc else netloc
    return netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc


class Cors:
    def __init__(self, allowed_origins: tuple[str, ...], keys: bool) -> None:
        self._any = keys or "*" in allowed_origins
        self._allowed = frozenset(o.rstrip("/").lower() for o in allowed_origins)

    def allows(self, origin: bytes) -> bool:
        text = origin.decode("latin-1").strip().rstrip("/").lower()
        if self._any or text in self._allowed:
            return True
        return "://" in text and is_loopback(_host_of(text))

    def headers(self, origin: bytes) -> bytes:
        """What every answer to an allowed origin carries."""
        return (
            b"Access-Control-Allow-Origin: " + origin.strip() + b"\r\nVary: Origin\r\n"
            b"Access-Control-Expose-Headers: " + EXPOSED + b"\r\n"
        )

    def preflight(self, origin: bytes, asked: bytes | None) -> bytes:
        """The head of a preflight's 204: the methods, the headers it asked for (the
        ``Authorization`` header among them), how long to remember it."""
        return (
            b"HTTP/1.1 204 No Content\r\n"
            + self.headers(origin)
            + b"Access-Control-Allow-Methods: " + METHODS + b"\r\n"
            + b"Access-Control-Allow-Headers: " + (asked.strip() if asked else HEADERS) + b"\r\n"
            + b"Access-Control-Max-Age: %d\r\n" % MAX_AGE_S
            + b"Content-Length: 0\r\n\r\n"
        )  # fmt: skip
