"""The control API faces a browser (issue 12): Host check, session cookie, CSRF, login codes.

Against a real daemon (started by the CLI), with raw HTTP so every header is the test's
choice; the code expiry runs in-process on a fake clock.
"""

from __future__ import annotations

import asyncio
import http.client
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Cli, free_port, write_config
from fastapi import HTTPException
from starlette.requests import Request

from llama_orchestrator.client.control import connect
from llama_orchestrator.clock import FakeClock
from llama_orchestrator.home import Home
from llama_orchestrator.web.auth import (
    COOKIE,
    HostGuard,
    WebAuth,
    allowed_hosts_from_env,
    authorize,
)


def raw(
    url: str, method: str, path: str, headers: dict[str, str], body: bytes | None = None
) -> tuple[int, dict[str, str], Any]:
    """One request with exactly these headers (http.client adds Host unless given)."""
    from urllib.parse import urlsplit

    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname or "", u.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host="host" in {k.lower() for k in headers})
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.putheader("Content-Length", str(len(body or b"")))
        conn.endheaders(body)
        resp = conn.getresponse()
        text = resp.read().decode()
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()
    try:
        return resp.status, hdrs, json.loads(text)
    except ValueError:
        return resp.status, hdrs, text


@pytest.fixture
def daemon(cli: Cli, home: Home, tiny_model: Path) -> tuple[str, str]:
    write_config(home, "alpha", tiny_model, free_port())
    assert cli("daemon", "start").returncode == 0
    client = connect(home)
    assert client is not None
    return client.url, client.token


def login(url: str, token: str) -> tuple[str, str]:
    """A session cookie and its CSRF token, as the page gets them."""
    status, _, body = raw(url, "POST", "/v1/ui/login-codes", {"Authorization": f"Bearer {token}"})
    assert status == 200, body
    status, headers, _ = raw(url, "GET", body["path"], {})
    assert status == 303 and headers["location"] == "/ui/"
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie, cookie
    assert "Secure" not in cookie  # plain http on loopback: a Secure cookie would not come back
    # behind a TLS proxy the cookie is Secure
    status, _, again = raw(url, "POST", "/v1/ui/login-codes", {"Authorization": f"Bearer {token}"})
    assert status == 200, again
    status, headers2, _ = raw(url, "GET", again["path"], {"X-Forwarded-Proto": "https"})
    assert status == 303 and "Secure" in headers2["set-cookie"], headers2
    sid = cookie.split(";", 1)[0].split("=", 1)[1]
    status, _, session = raw(url, "GET", "/v1/ui/session", {"Cookie": f"{COOKIE}={sid}"})
    assert status == 200 and session["csrf"], session
    return sid, session["csrf"]


def test_a_foreign_host_is_refused_with_421(daemon: tuple[str, str]) -> None:
    url, token = daemon
    bearer = {"Authorization": f"Bearer {token}"}
    for host in ("evil.example", "evil.example:7070", "192.168.1.20:80", "127.0.0.1.nip.io"):
        status, _, body = raw(url, "GET", "/v1/instances", {**bearer, "Host": host})
        assert status == 421, (host, status, body)
        assert "LLAMA_ORCH_ALLOWED_HOSTS" in body["detail"]
    status, _, body = raw(url, "GET", "/ui/", {"Host": "evil.example"})
    assert status == 421
    for host in ("127.0.0.1", "localhost:1234", "[::1]:9", "127.0.0.2"):
        status, _, body = raw(url, "GET", "/v1/instances", {**bearer, "Host": host})
        assert status == 200, (host, status, body)
    status, headers, _ = raw(url, "GET", "/v1/instances", {**bearer, "Origin": "http://evil.x"})
    assert status == 200 and not any(h.startswith("access-control-") for h in headers)


def test_a_configured_host_is_allowed(cli: Cli, home: Home, tiny_model: Path) -> None:
    write_config(home, "alpha", tiny_model, free_port())
    env = {"LLAMA_ORCH_ALLOWED_HOSTS": "box.lan, other.lan:8080"}
    assert cli("daemon", "start", env=env).returncode == 0
    client = connect(home)
    assert client is not None
    bearer = {"Authorization": f"Bearer {client.token}"}
    assert raw(client.url, "GET", "/v1/daemon", {**bearer, "Host": "box.lan:7070"})[0] == 200
    assert raw(client.url, "GET", "/v1/daemon", {**bearer, "Host": "other.lan"})[0] == 200
    assert raw(client.url, "GET", "/v1/daemon", {**bearer, "Host": "third.lan"})[0] == 421


def test_cookie_writes_need_the_csrf_header(daemon: tuple[str, str]) -> None:
    url, token = daemon
    sid, csrf = login(url, token)
    cookie = {"Cookie": f"{COOKIE}={sid}"}
    # reads: the cookie alone is enough
    status, _, rows = raw(url, "GET", "/v1/instances", cookie)
    assert status == 200 and [r["name"] for r in rows] == ["alpha"]
    # a change with the cookie but no CSRF header is refused, and nothing happens
    status, _, body = raw(url, "POST", "/v1/daemon/reload", cookie)
    assert status == 403 and "x-csrf-token" in body["detail"]
    status, _, body = raw(url, "POST", "/v1/daemon/reload", {**cookie, "X-CSRF-Token": "wrong"})
    assert status == 403 and "does not match this session" in body["detail"]
    # with it: done
    status, _, body = raw(url, "POST", "/v1/daemon/reload", {**cookie, "X-CSRF-Token": csrf})
    assert status == 200 and body["instances"] == 1, body
    # the right token from another site (the browser says so) is still refused
    for cross in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "http://evil.example"}):
        headers = {**cookie, "X-CSRF-Token": csrf, **cross}
        status, _, body = raw(url, "POST", "/v1/daemon/reload", headers)
        assert status == 403 and "cross-site" in body["detail"], cross
    same = {**cookie, "X-CSRF-Token": csrf, "Sec-Fetch-Site": "same-origin", "Origin": url}
    assert raw(url, "POST", "/v1/daemon/reload", same)[0] == 200
    # a made-up cookie is no session
    status, _, body = raw(url, "GET", "/v1/instances", {"Cookie": f"{COOKIE}=forged"})
    assert status == 401 and "llama-orch ui" in body["detail"]
    # a page cannot mint login codes for itself: that takes the token
    headers = {**cookie, "X-CSRF-Token": csrf}
    assert raw(url, "POST", "/v1/ui/login-codes", headers)[0] == 401
    # logging out ends the session
    assert raw(url, "POST", "/v1/ui/logout", headers)[0] == 204
    assert raw(url, "GET", "/v1/instances", cookie)[0] == 401


def test_login_codes_are_single_use(daemon: tuple[str, str]) -> None:
    url, token = daemon
    status, _, body = raw(url, "POST", "/v1/ui/login-codes", {"Authorization": f"Bearer {token}"})
    assert status == 200 and body["expires_in"] == 120
    assert raw(url, "GET", body["path"], {})[0] == 303
    status, headers, page = raw(url, "GET", body["path"], {})
    assert status == 403 and "set-cookie" not in headers
    assert "already used" in page and "llama-orch ui" in page
    assert raw(url, "GET", "/ui/login?code=made-up", {})[0] == 403
    status, _, page = raw(url, "GET", "/ui/", {})
    assert status == 401 and "Not signed in" in page
    # without a token, no code
    assert raw(url, "POST", "/v1/ui/login-codes", {})[0] == 401


def test_the_bearer_token_is_unchanged(daemon: tuple[str, str], cli: Cli) -> None:
    url, token = daemon
    r = httpx.get(f"{url}/v1/instances", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200
    r = httpx.post(f"{url}/v1/daemon/reload", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200  # no CSRF header needed with the token
    assert httpx.get(f"{url}/v1/instances").status_code == 401
    assert (
        httpx.get(f"{url}/v1/instances", headers={"Authorization": "Bearer no"}).status_code == 401
    )
    assert httpx.get(f"{url}/openapi.json").status_code == 200
    assert cli("ps", "--json").returncode == 0


def test_no_docs_pages_run_script_from_elsewhere(daemon: tuple[str, str]) -> None:
    """/docs and /redoc would load a CDN's script on the origin of the page's session
    (it could read the session's CSRF token): there are none; /openapi.json stays."""
    url, token = daemon
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        assert httpx.get(f"{url}{path}").status_code == 404, path
        bearer = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{url}{path}", headers=bearer).status_code == 404, path
    assert httpx.get(f"{url}/openapi.json").status_code == 200


def test_the_ui_command_prints_a_working_login_url(daemon: tuple[str, str], cli: Cli) -> None:
    url, _token = daemon
    out = cli("ui", "--json")
    assert out.returncode == 0, out.stderr
    link = json.loads(out.stdout)["url"]
    assert link.startswith(f"{url}/ui/login?code=")
    plain = cli("ui", "--no-browser")
    assert plain.returncode == 0 and plain.stdout.strip().startswith(f"{url}/ui/login?code=")
    r = httpx.get(link, follow_redirects=True)
    assert r.status_code == 200 and "<title>llama-orchestrator</title>" in r.text
    assert "script-src 'self'" in r.headers["content-security-policy"]


# -- in-process: the expiry on a fake clock, the Host parser -------------------------------


def _request(method: str, headers: dict[str, str]) -> Request:
    scope = {
        "type": "http",
        "method": method,
        "path": "/",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    return Request(scope)


def test_a_login_code_expires_after_its_ttl() -> None:
    clock = FakeClock()
    web = WebAuth(clock, code_ttl=120)
    late, fresh = web.new_code(), web.new_code()
    asyncio.run(clock.advance(119.9))
    assert web.redeem(fresh) is not None  # just in time
    asyncio.run(clock.advance(0.2))
    assert web.redeem(late) is None  # 120.1 s: expired
    sid = web.redeem(web.new_code())
    assert sid is not None and web.session(sid) is not None
    session = web.session(sid)
    assert session is not None
    cookie = {"cookie": f"{COOKIE}={sid}"}
    authorize(_request("GET", cookie), "tok", web)
    with pytest.raises(HTTPException) as e:
        authorize(_request("POST", cookie), "tok", web)
    assert e.value.status_code == 403
    authorize(_request("POST", {**cookie, "x-csrf-token": session.csrf}), "tok", web)
    authorize(_request("POST", {"authorization": "Bearer tok"}), "tok", web)
    with pytest.raises(HTTPException) as e:
        authorize(_request("GET", {"authorization": "Bearer nope"}), "tok", web)
    assert e.value.status_code == 401


def test_host_names() -> None:
    guard = HostGuard(lambda *_: None, allowed_hosts_from_env("Box.Lan,,[fd00::1]:80"))  # type: ignore[arg-type,return-value]
    for ok in ("localhost", "LOCALHOST:80", "127.0.0.1:7", "[::1]", "[::1]:80", "box.lan:1"):
        assert guard.permits(ok), ok
    for bad in (None, "", "evil", "localhost.evil.com", "0.0.0.0", "[fd00::2]", "box.lan.evil"):
        assert not guard.permits(bad), bad
    assert guard.permits("[fd00::1]:443")
