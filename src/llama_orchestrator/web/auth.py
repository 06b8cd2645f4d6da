"""Who may use the control API now that a browser talks to it (issue 12).

Two kinds of client:

* the CLI and scripts send the bearer token from ``state/token``, as before;
* the web page holds a session cookie. ``llama-orch ui`` asks the daemon (with the token)
  for a one-time login code and prints a URL carrying it, as Jupyter does; opening it
  trades the code for an HttpOnly, SameSite=Strict cookie. Codes are single use and
  expire after ``CODE_TTL_S``; sessions live in the daemon's memory only, so a daemon
  restart logs every page out.

A request the cookie authorises that changes something must also carry the session's
CSRF token in ``X-CSRF-Token`` (the page reads it from ``GET /v1/ui/session``) and, when
the browser says where it comes from (``Sec-Fetch-Site``, ``Origin``), come from the
page's own origin. No CORS header is ever sent, so no other site can read an answer.

``HostGuard`` refuses (421) any request whose ``Host`` is not a loopback name or address
or one configured in ``LLAMA_ORCH_ALLOWED_HOSTS``: a DNS-rebinding page that makes
``evil.example`` resolve to 127.0.0.1 reaches the port but not the API.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request

from llama_orchestrator.clock import SYSTEM_CLOCK, Clock

COOKIE = "llama_orch_session"
CSRF_HEADER = "x-csrf-token"
CODE_TTL_S = 120.0
SESSION_TTL_S = 7 * 24 * 3600.0  # idle sessions go after a week (and at a daemon restart)
MAX_CODES = 64  # outstanding codes kept; the oldest goes first
MAX_SESSIONS = 256
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ALLOWED_HOSTS_ENV = "LLAMA_ORCH_ALLOWED_HOSTS"


@dataclass
class Session:
    csrf: str
    created: float
    seen: float


class WebAuth:
    """Login codes and sessions, in memory, timed by an injected clock."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK, code_ttl: float = CODE_TTL_S) -> None:
        self.clock = clock
        self.code_ttl = code_ttl
        self._codes: dict[str, float] = {}  # code -> expiry (monotonic)
        self._sessions: dict[str, Session] = {}

    def new_code(self) -> str:
        now = self.clock.monotonic()
        self._prune(now)
        while len(self._codes) >= MAX_CODES:
            self._codes.pop(next(iter(self._codes)))
        code = secrets.token_urlsafe(24)
        self._codes[code] = now + self.code_ttl
        return code

    def redeem(self, code: str) -> str | None:
        """A new session id for a valid code, which is spent; None when the code is
        unknown, used or expired."""
        now = self.clock.monotonic()
        expiry = None
        for known in list(self._codes):
            if hmac.compare_digest(known.encode(), code.encode()):
                expiry = self._codes.pop(known)
        if expiry is None or now >= expiry:
            return None
        self._prune(now)
        while len(self._sessions) >= MAX_SESSIONS:
            self._sessions.pop(next(iter(self._sessions)))
        sid = secrets.token_urlsafe(32)
        self._sessions[sid] = Session(csrf=secrets.token_urlsafe(24), created=now, seen=now)
        return sid

    def session(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        found = self._sessions.get(sid)
        now = self.clock.monotonic()
        if found is None or now - found.seen > SESSION_TTL_S:
            self._sessions.pop(sid, None)
            return None
        found.seen = now
        return found

    def logout(self, sid: str | None) -> None:
        if sid:
            self._sessions.pop(sid, None)

    def _prune(self, now: float) -> None:
        for code, expiry in list(self._codes.items()):
            if now >= expiry:
                del self._codes[code]
        for sid, s in list(self._sessions.items()):
            if now - s.seen > SESSION_TTL_S:
                del self._sessions[sid]


def bearer_ok(request: Request, token: str) -> bool:
    header = request.headers.get("authorization", "")
    given = header[7:] if header.lower().startswith("bearer ") else ""
    return bool(given) and hmac.compare_digest(given.encode(), token.encode())


def same_origin(request: Request) -> bool:
    """What the browser says of where the request comes from, when it says anything."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


def authorize(request: Request, token: str, web: WebAuth) -> None:
    """The bearer token, or the page's session (plus its CSRF token on a change)."""
    if bearer_ok(request, token):
        return
    session = web.session(request.cookies.get(COOKIE))
    if session is None:
        raise HTTPException(
            401,
            "missing or wrong bearer token (see state/token), and no web session "
            "(run `llama-orch ui` for a login link)",
        )
    if request.method in SAFE_METHODS:
        return
    given = request.headers.get(CSRF_HEADER, "")
    if not given:
        raise HTTPException(403, f"a change from the web page needs its {CSRF_HEADER} header")
    if not hmac.compare_digest(given.encode(), session.csrf.encode()):
        raise HTTPException(  # issue 19, item 13: it said the header was missing
            403,
            f"the {CSRF_HEADER} header does not match this session's token (another "
            "session's, or an old one); reload the web page",
        )
    if not same_origin(request):
        raise HTTPException(403, "cross-site request refused")


# -- Host check ----------------------------------------------------------------------------

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def host_name(header: str) -> str:
    """``"127.0.0.1:7070"`` -> ``"127.0.0.1"``; ``"[::1]:80"`` -> ``"::1"``."""
    header = header.strip().lower()
    if header.startswith("["):
        end = header.find("]")
        return header[1:end] if end > 0 else header
    if header.count(":") == 1:
        return header.split(":", 1)[0]
    return header


def loopback_name(name: str) -> bool:
    if name in ("localhost", "localhost.") or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def allowed_hosts_from_env(value: str | None) -> tuple[str, ...]:
    return tuple(h.strip().lower() for h in (value or "").split(",") if h.strip())


class HostGuard:
    """Pure ASGI: a request whose ``Host`` is not loopback or configured gets 421."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str] = ()) -> None:
        self.app = app
        self.allowed = frozenset(host_name(h) for h in allowed)

    def permits(self, header: str | None) -> bool:
        if not header:
            return False
        name = host_name(header)
        return loopback_name(name) or name in self.allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            raw = dict(scope.get("headers") or []).get(b"host")
            header = raw.decode("latin-1") if raw is not None else None
            if not self.permits(header):
                await self._refuse(scope, send, header)
                return
        await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(scope: Scope, send: Send, header: str | None) -> None:
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1008})
            return
        detail = (
            f"Host {header!r} is not this daemon's: use 127.0.0.1 or localhost, or add the "
            f"name to {ALLOWED_HOSTS_ENV} (comma-separated) in the daemon's environment"
        )
        body = json.dumps({"detail": detail}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 421,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
