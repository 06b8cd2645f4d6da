"""The web page's routes: login by one-time code, the page itself, its static files.

``POST /v1/ui/login-codes`` (bearer token only: a page cannot mint codes for itself)
gives a code that ``GET /ui/login?code=...`` trades, once, for the session cookie, then
redirects to ``/ui/``. ``GET /v1/ui/session`` tells the page its CSRF token. The files
under ``static/`` ship inside the package: no CDN, no build step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.params import Depends
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from llama_orchestrator.web.auth import COOKIE, CSRF_HEADER, SESSION_TTL_S, WebAuth, bearer_ok

STATIC = Path(__file__).parent / "static"
MEDIA = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
# name -> media type of every file the page may load: nothing else is served
ASSETS = {p.name: MEDIA[p.suffix] for p in STATIC.iterdir() if p.suffix in MEDIA}
NO_STORE = {"Cache-Control": "no-store"}
# The page runs only its own files: no inline script, nothing from elsewhere.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
PAGE_HEADERS = {
    **NO_STORE,
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def _message_page(title: str, text: str, status: int) -> HTMLResponse:
    from html import escape

    body = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(title)} - llama-orchestrator</title>"
        '<link rel=stylesheet href="/ui/static/style.css"></head>'
        f'<body class="message"><main><h1>{escape(title)}</h1><p>{escape(text)}</p>'
        "<p>Run <code>llama-orch ui</code> for a new login link.</p></main></body></html>"
    )
    return HTMLResponse(body, status_code=status, headers=PAGE_HEADERS)


def ui_router(web: WebAuth, token: str, auth: list[Depends]) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/ui/login-codes")
    async def login_code(request: Request) -> dict[str, Any]:
        """A one-time login code for the web page (``llama-orch ui`` asks for it).

        Single use, valid for ``expires_in`` seconds; bearer token only."""
        if not bearer_ok(request, token):
            raise HTTPException(401, "missing or wrong bearer token (see state/token)")
        code = web.new_code()
        return {"code": code, "path": f"/ui/login?code={code}", "expires_in": web.code_ttl}

    @router.get("/v1/ui/session", dependencies=auth)
    async def session(request: Request) -> dict[str, Any]:
        """The page's CSRF token (send it as ``X-CSRF-Token`` with every change)."""
        found = web.session(request.cookies.get(COOKIE))
        return {"csrf": found.csrf if found else None, "csrf_header": CSRF_HEADER}

    @router.post("/v1/ui/logout", dependencies=auth)
    async def logout(request: Request) -> Response:
        web.logout(request.cookies.get(COOKIE))
        resp = Response(status_code=204)
        resp.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return resp

    @router.get("/ui/login", include_in_schema=False)
    async def login(request: Request, code: str = "") -> Response:
        sid = web.redeem(code) if code else None
        if sid is None:
            return _message_page(
                "This login link is not valid",
                "It was already used, it expired (links last "
                f"{web.code_ttl:.0f} seconds), or the daemon restarted since it was made.",
                403,
            )
        resp = RedirectResponse("/ui/", status_code=303, headers=NO_STORE)
        # Secure when the page is reached over https (a TLS proxy in front, one of
        # LLAMA_ORCH_ALLOWED_HOSTS): the cookie then never travels in clear text
        tls = request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"
        resp.set_cookie(
            COOKIE,
            sid,
            max_age=int(SESSION_TTL_S),
            path="/",
            httponly=True,
            samesite="strict",
            secure=tls,
        )
        return resp

    @router.get("/ui", include_in_schema=False)
    async def ui_bare() -> Response:
        return RedirectResponse("/ui/", status_code=308)

    @router.get("/ui/", include_in_schema=False)
    async def page(request: Request) -> Response:
        if web.session(request.cookies.get(COOKIE)) is None:
            return _message_page(
                "Not signed in",
                "This page needs a login link from the command line (sessions end when "
                "the daemon restarts).",
                401,
            )
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=PAGE_HEADERS)

    @router.get("/ui/static/{asset}", include_in_schema=False)
    async def static(asset: str) -> Response:
        media = ASSETS.get(asset)
        if media is None:
            raise HTTPException(404, f"no such file: {asset}")
        return FileResponse(STATIC / asset, media_type=media, headers={"Cache-Control": "no-cache"})

    return router
