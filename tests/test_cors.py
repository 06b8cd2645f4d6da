"""CORS (issue 20): pages on this machine, pages with a key, and ``allowed_origins``.

A page is served from another local port and ``fetch``es the gateway in the real browser
the suite already drives (Playwright over the system's chromium); ``app.test`` resolves
to this machine inside that browser, to stand for another site.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import free_port

from llama_orchestrator.config.gateway import GatewayConfig
from llama_orchestrator.gateway.settings import GatewaySettings
from llama_orchestrator.gateway.testing import (
    GatewayThread,
    ListDirectory,
    ServerInstance,
    server_argv,
)

CHROMIUM = os.environ.get("LLAMA_ORCH_CHROMIUM", "/usr/bin/chromium")
KEY = "sk-cors-test-key-0123456789"
FETCH = """async ([url, key]) => {
  const headers = {"Content-Type": "application/json"};
  if (key) headers["Authorization"] = "Bearer " + key;
  try {
    const r = await fetch(url + "/v1/chat/completions", {method: "POST", headers,
      body: JSON.stringify({model: "chat", max_tokens: 2,
                            messages: [{role: "user", content: "hi"}]})});
    const body = await r.json();
    return {status: r.status, instance: r.headers.get("X-Llama-Orch-Instance"),
            model: body.model || null};
  } catch (e) { return {error: String(e)}; }
}"""


@pytest.fixture(scope="module")
def chat(llama_server_bin: Path, tiny_model: Path) -> Iterator[ServerInstance]:
    port = free_port()
    inst = ServerInstance("chat", server_argv(llama_server_bin, tiny_model, port), port)
    assert inst.start().ok
    yield inst
    inst.stop()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A page's origin: a plain HTTP server on another port."""
    root = tmp_path_factory.mktemp("site")
    (root / "index.html").write_text("<!doctype html><title>app</title><p>app</p>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        pytest.skip(f"no chromium at {CHROMIUM}")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        args = ["--host-resolver-rules=MAP *.test 127.0.0.1"]
        if os.geteuid() == 0:
            args.append("--no-sandbox")
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        yield b
        b.close()


def fetch_from(browser: Any, page_url: str, gw_url: str, key: str | None) -> dict[str, Any]:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(page_url)
        return dict(page.evaluate(FETCH, [gw_url, key]))
    finally:
        context.close()


def test_a_page_on_this_machine(browser: Any, site: int, chat: ServerInstance) -> None:
    with GatewayThread(ListDirectory([chat])) as gw:
        got = fetch_from(browser, f"http://localhost:{site}/", gw.url, "anything")
    assert got == {"status": 200, "instance": "chat", "model": got["model"]}, got


def test_with_keys_any_site_that_sends_one(browser: Any, site: int, chat: ServerInstance) -> None:
    settings = GatewaySettings(port=0, api_keys=(KEY,))
    with GatewayThread(ListDirectory([chat]), settings) as gw:
        ok = fetch_from(browser, f"http://app.test:{site}/", gw.url, KEY)
        refused = fetch_from(browser, f"http://app.test:{site}/", gw.url, None)
    assert ok["status"] == 200 and ok["instance"] == "chat", ok
    assert refused["status"] == 401, refused  # readable: the error carries CORS headers


def test_another_site_needs_allowed_origins(browser: Any, site: int, chat: ServerInstance) -> None:
    origin = f"http://app.test:{site}"
    with GatewayThread(ListDirectory([chat])) as gw:
        blocked = fetch_from(browser, f"{origin}/", gw.url, None)
    assert "Failed to fetch" in blocked.get("error", ""), blocked
    settings = GatewaySettings(port=0, allowed_origins=(origin,))
    with GatewayThread(ListDirectory([chat]), settings) as gw:
        allowed = fetch_from(browser, f"{origin}/", gw.url, None)
    assert allowed["status"] == 200, allowed


def test_the_preflight(chat: ServerInstance) -> None:
    with GatewayThread(ListDirectory([chat])) as gw:
        r = httpx.options(
            f"{gw.url}/v1/chat/completions",
            headers={
                "Origin": "http://localhost:3000",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert r.status_code == 204
        h = r.headers
        assert h["access-control-allow-origin"] == "http://localhost:3000"
        assert "POST" in h["access-control-allow-methods"]
        assert "authorization" in h["access-control-allow-headers"]
        assert int(h["access-control-max-age"]) > 0
        answer = httpx.post(
            f"{gw.url}/v1/chat/completions",
            headers={"Origin": "http://localhost:3000"},
            json={"model": "chat", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]},
        )
        # One Access-Control-Allow-Origin: llama-server's own echo is not relayed.
        assert answer.headers.get_list("access-control-allow-origin") == ["http://localhost:3000"]
        assert "X-Llama-Orch-Instance" in answer.headers["access-control-expose-headers"]
        foreign = httpx.options(
            f"{gw.url}/v1/models",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        )
        assert foreign.status_code == 403
        assert "access-control-allow-origin" not in foreign.headers


@pytest.mark.parametrize("bad", ["example.com", "https://a.example/path", "ftp://x"])
def test_allowed_origins_are_origins(bad: str) -> None:
    with pytest.raises(ValueError, match="scheme://host"):
        GatewayConfig.model_validate({"allowed_origins": [bad]})
    assert GatewayConfig.model_validate({"allowed_origins": ["https://a.example", "*"]})
