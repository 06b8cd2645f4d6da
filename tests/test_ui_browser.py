"""The web page in a real browser (issue 12): Playwright driving the system's chromium.

A real daemon with real servers and its gateway; the page logs in from ``ui --json``,
follows the CLI through the event stream, starts an instance, cancels a stream in flight
and streams a completion in the playground. Each screen is saved as a PNG under the
test's tmp_path (``instances.png``, ``instance.png``, ``activity.png``, ``devices.png``,
``playground.png``).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Cli, free_port, write_config
from helpers import LETTERS, ps_row, wait_for

from llama_orchestrator.home import Home

CHROMIUM = os.environ.get("LLAMA_ORCH_CHROMIUM", "/usr/bin/chromium")

if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
    pytest.skip(
        f"no chromium at {CHROMIUM} (apt install chromium, or set LLAMA_ORCH_CHROMIUM)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
expect = sync_api.expect


def gateway(home: Home, **settings: Any) -> str:
    port = free_port()
    home.root.mkdir(parents=True, exist_ok=True)
    (home.root / "gateway.json").write_text(json.dumps({"port": port, **settings}))
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1360, "height": 860})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    assert not errors, f"the page raised: {errors}"


def login(cli: Cli, page: Any) -> None:
    out = cli("ui", "--json")
    assert out.returncode == 0, out.stderr
    page.goto(json.loads(out.stdout)["url"])
    assert page.url.endswith("/ui/")


def row(page: Any, name: str) -> Any:
    return page.locator(f'tr[data-instance="{name}"]')


def long_stream(url: str, model: str, result: dict[str, Any]) -> threading.Thread:
    """A stream of up to 15000 tokens in a thread: ``result`` gets its chunks and end."""
    body = {"model": model, "prompt": "x", "max_tokens": 15000, "stream": True, **LETTERS}
    result.update(chunks=0, done=False, ended=None, error=None)

    def read() -> None:
        try:
            with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as r:
                for line in r.iter_lines():
                    if line.startswith("data: {"):
                        result["chunks"] += 1
                    elif line == "data: [DONE]":
                        result["done"] = True
        except httpx.HTTPError as e:
            result["error"] = repr(e)
        result["ended"] = time.monotonic()

    t = threading.Thread(target=read, daemon=True)
    t.start()
    return t


def test_the_page_follows_the_cli_and_starts_an_instance(
    cli: Cli, home: Home, tiny_model: Path, page: Any, tmp_path: Path
) -> None:
    gateway(home, memory_budget_mb={"cpu": 1024})
    write_config(home, "alpha", tiny_model, free_port())
    write_config(home, "beta", tiny_model, free_port())
    assert cli("up", "alpha").returncode == 0
    login(cli, page)

    alpha = row(page, "alpha")
    expect(alpha.locator("td.state")).to_have_text("running")
    expect(row(page, "beta").locator("td.state")).to_have_text("stopped")
    expect(alpha.get_by_role("button", name="Start", exact=True)).to_be_disabled()
    expect(alpha.get_by_role("button", name="Stop", exact=True)).to_be_enabled()
    expect(alpha.get_by_role("button", name="Restart", exact=True)).to_be_enabled()
    expect(alpha).to_contain_text("tiny.gguf")
    page.screenshot(path=str(tmp_path / "instances.png"), full_page=True)

    # a `down` from the CLI shows within 2 s, without a reload
    page.evaluate("window.__marker = 'same page'")
    assert cli("down", "alpha").returncode == 0
    expect(alpha.locator("td.state")).to_have_text("stopped", timeout=2000)
    assert page.evaluate("window.__marker") == "same page"

    # the page's Start button starts it
    alpha.get_by_role("button", name="Start", exact=True).click()
    expect(alpha.locator("td.state")).to_have_text("running", timeout=30000)
    assert ps_row(cli, "alpha")["status"] == "running"
    expect(alpha.get_by_role("button", name="Start", exact=True)).to_be_disabled()

    # the instance screen: config, command line, health sparkline, live log
    alpha.get_by_role("link", name="alpha", exact=True).click()
    expect(page.locator("h1")).to_have_text("alpha")
    expect(page.locator("pre.block").first).to_contain_text("--port")
    expect(page.locator("svg.spark")).to_be_visible(timeout=10000)
    expect(page.locator("#logs")).to_contain_text("llama-orch: starting alpha", timeout=10000)
    expect(page.get_by_text("Recent events")).to_be_visible()
    page.screenshot(path=str(tmp_path / "instance.png"), full_page=True)
    page.get_by_role("button", name="Stop", exact=True).click()
    expect(page.locator(".page-head .pill")).to_have_text("stopped", timeout=10000)

    # devices: the budget, what alpha would need, the fit verdicts
    assert cli("up", "alpha").returncode == 0
    page.get_by_role("link", name="Devices", exact=True).click()
    device = page.locator('[data-device="cpu"]')
    expect(device).to_contain_text("budget 1.0 GiB")
    expect(device.locator('.seg[data-name="alpha"]')).to_be_attached()
    expect(page.locator("table")).to_contain_text("beta")
    expect(page.locator("table")).to_contain_text("fits")
    page.screenshot(path=str(tmp_path / "devices.png"), full_page=True)
    # the dark theme, as a system set to dark asks
    page.emulate_media(color_scheme="dark")
    page.get_by_role("link", name="Instances", exact=True).click()
    expect(row(page, "alpha").locator("td.state")).to_have_text("running")
    page.screenshot(path=str(tmp_path / "instances-dark.png"), full_page=True)


def test_cancel_ends_a_stream_and_the_playground_streams(
    cli: Cli, home: Home, tiny_model: Path, page: Any, tmp_path: Path
) -> None:
    url = gateway(home)
    path = write_config(home, "alpha", tiny_model, free_port())
    cfg = json.loads(path.read_text())
    cfg["model"]["context_size"] = 16384  # room for a long stream
    path.write_text(json.dumps(cfg))
    assert cli("up", "alpha").returncode == 0
    login(cli, page)

    # a long stream shows in flight; Cancel ends it, and it is recorded as 499
    result: dict[str, Any] = {}
    reader = long_stream(url, "alpha", result)
    wait_for(lambda: result["chunks"] > 0, what="the stream to start")
    page.get_by_role("link", name="Activity", exact=True).click()
    flying = page.locator("table.inflight tbody tr")
    expect(flying).to_have_count(1)
    expect(flying).to_contain_text("alpha")
    expect(flying).to_contain_text("running")
    page.screenshot(path=str(tmp_path / "activity.png"), full_page=True)
    flying.get_by_role("button", name="Cancel", exact=True).click()
    wait_for(lambda: result["ended"] is not None, timeout=10, what="the cancelled stream to end")
    reader.join(5)
    assert not result["done"], result  # cut off, not finished
    expect(page.locator("table.inflight")).to_have_count(0)
    recent = page.locator("table.recent tbody tr").first
    expect(recent).to_contain_text("499")
    expect(recent).to_contain_text("alpha")

    def slots() -> list[dict[str, Any]]:
        r = httpx.get(f"{url}/upstream/alpha/slots", timeout=5)
        assert r.status_code == 200, r.text  # the server's /slots, through the gateway
        return list(r.json())

    # the server stopped generating: its slot is free
    wait_for(
        lambda: not any(s["is_processing"] for s in slots()),
        timeout=10,
        what="the slot to be freed",
    )
    page.screenshot(path=str(tmp_path / "activity-after-cancel.png"), full_page=True)

    # the playground streams a completion through the gateway
    page.get_by_role("link", name="Playground", exact=True).click()
    expect(page.locator("#pg-model")).to_have_value("alpha")
    page.locator("#pg-prompt").fill("Once upon a time")
    page.locator("#pg-max").fill("24")
    page.locator("#pg-extra").evaluate("el => el.closest('details').open = true")
    page.locator("#pg-extra").fill(json.dumps(LETTERS))
    page.get_by_role("button", name="Send", exact=True).click()
    output = page.locator("#pg-output")
    expect(output).to_have_attribute("data-done", "1", timeout=30000)
    text = output.inner_text()
    assert len(text) >= 24 and text.isalpha() and text.islower(), text
    expect(page.locator("#pg-stats")).to_contain_text("24 tokens")
    page.screenshot(path=str(tmp_path / "playground.png"), full_page=True)
    # and the request shows in the activity
    page.get_by_role("link", name="Activity", exact=True).click()
    expect(page.locator("table.recent tbody tr").first).to_contain_text("200")
    # signing out ends the session: the page then asks for a login link
    page.get_by_role("button", name="Sign out", exact=True).click()
    expect(page.locator("h1")).to_have_text("Not signed in")


def test_a_stopped_daemon_shows_in_words(
    cli: Cli, home: Home, tiny_model: Path, page: Any, tmp_path: Path
) -> None:
    write_config(home, "alpha", tiny_model, free_port())
    out = cli("ui", "--json")
    assert out.returncode == 0, out.stderr
    link = json.loads(out.stdout)["url"]
    page.goto(link)
    expect(row(page, "alpha").locator("td.state")).to_have_text("stopped")
    # the link worked once: opened again, it says why not, in words
    other = page.context.new_page()
    other.goto(link)
    expect(other.locator("h1")).to_have_text("This login link is not valid")
    expect(other.locator("main")).to_contain_text("llama-orch ui")
    other.screenshot(path=str(tmp_path / "used-link.png"), full_page=True)
    other.close()
    assert cli("daemon", "stop").returncode == 0
    expect(page.locator("#banner")).to_contain_text("daemon unreachable, retrying")
    expect(row(page, "alpha")).to_be_visible()  # what it showed stays, never a blank page
    page.screenshot(path=str(tmp_path / "unreachable.png"), full_page=True)
    # a new daemon does not know the old session: the page says how to sign in again
    assert cli("daemon", "start").returncode == 0
    expect(page.locator("#banner")).to_contain_text("llama-orch ui", timeout=15000)


def test_a_remote_instance_says_where_its_log_is(
    cli: Cli, home: Home, page: Any, tmp_path: Path
) -> None:
    """Its server runs on another machine: the log panel says so instead of staying empty."""
    path = home.config_path("far")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"name": "far", "remote": {"url": "http://10.0.0.7:8080"}}))
    login(cli, page)
    row(page, "far").get_by_role("link", name="far", exact=True).click()
    expect(page.locator("h1")).to_have_text("far")
    logs = page.locator("#logs")
    expect(logs).to_have_text("a remote instance: its server's log is on the machine that runs it")
    expect(page.locator("pre.block").nth(1)).to_contain_text("10.0.0.7")  # its config
    expect(page.locator("pre.block").nth(0)).to_have_text(
        "nothing runs here: requests go to http://10.0.0.7:8080"
    )
    expect(page.locator("dl.kv")).to_contain_text("http://10.0.0.7:8080")  # where it routes
    page.screenshot(path=str(tmp_path / "remote.png"), full_page=True)
