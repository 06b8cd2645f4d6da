"""``GET /v1/events`` and ``llama-orch events`` (issue 12): a real daemon, real servers."""

from __future__ import annotations

import asyncio
import json
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
from conftest import Cli, free_port, write_config
from helpers import wait_for

from llama_orchestrator.daemon.events import Event, EventBus, EventKind
from llama_orchestrator.daemon.events_api import stream
from llama_orchestrator.home import Home


def start_daemon(cli: Cli) -> tuple[str, str]:
    out = cli("daemon", "start", timeout=60)
    assert out.returncode == 0, out.stderr
    endpoint = json.loads(cli.home.daemon_endpoint_path.read_text())
    return endpoint["url"], cli.home.token_path.read_text().strip()


class Listener:
    """Reads one SSE stream in a thread: ``(event name, data)`` pairs onto a list."""

    def __init__(self, url: str, token: str, params: list[tuple[str, str]] | None = None):
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.status: int | None = None
        self.headers: httpx.Headers | None = None
        self.ended = threading.Event()
        self._args = (url + "/v1/events", token, params or [])
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        url, token, params = self._args
        headers = {"Authorization": f"Bearer {token}"}
        try:
            with httpx.stream(
                "GET", url, params=params, headers=headers, timeout=120, trust_env=False
            ) as r:
                self.status, self.headers = r.status_code, r.headers
                name = "message"
                for line in r.iter_lines():
                    if line.startswith("event:"):
                        name = line[6:].strip()
                    elif line.startswith("data:"):
                        self.events.append((name, json.loads(line[5:])))
        except httpx.HTTPError:
            pass
        finally:
            self.ended.set()

    def of(self, kind: str, instance: str | None = None) -> list[dict[str, Any]]:
        return [
            d
            for k, d in list(self.events)
            if k == kind and (instance is None or d.get("instance") == instance)
        ]

    def reached(self, instance: str, state: str) -> bool:
        return any(d.get("new") == state for d in self.of("state", instance))


def test_snapshot_then_live_state_events_with_filters(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    write_config(home, "alpha", tiny_model, free_port())
    write_config(home, "beta", tiny_model, free_port())
    url, token = start_daemon(cli)
    every = Listener(url, token)
    only_beta = Listener(url, token, [("instance", "beta"), ("kinds", "state,exit")])
    both = Listener(url, token, [("instance", "alpha"), ("instance", "beta")])
    for listener in (every, only_beta, both):
        wait_for(lambda lst=listener: lst.events, what="the snapshot")  # type: ignore[misc]
    assert every.status == 200 and every.headers is not None
    assert every.headers["content-type"].startswith("text/event-stream")
    assert every.headers["cache-control"] == "no-cache"
    snap = {d["instance"]: d for d in every.of("snapshot")}
    assert set(snap) == {"alpha", "beta"}
    assert snap["alpha"]["state"] == "stopped" and snap["alpha"]["pid"] is None
    assert [d["instance"] for d in only_beta.of("snapshot")] == ["beta"]

    assert cli("up", "alpha").returncode == 0
    assert cli("up", "beta").returncode == 0
    wait_for(lambda: every.reached("beta", "running"), what="beta running on the stream")
    wait_for(lambda: only_beta.reached("beta", "running"), what="beta on the filtered stream")
    wait_for(lambda: both.reached("beta", "running"), what="beta on the two-name stream")
    states = [(d["old"], d["new"]) for d in every.of("state", "alpha")]
    assert ("starting", "running") in states, states
    assert every.of("spawned", "alpha") and every.of("health", "alpha")
    # Events arrive in publish order: alpha's, published before beta's, would be here.
    assert {d["instance"] for _k, d in only_beta.events} == {"beta"}
    assert {k for k, _d in only_beta.events} <= {"snapshot", "state", "exit"}
    assert both.reached("alpha", "running")

    # The daemon stopping ends every stream with a final event (and is not held up).
    assert cli("daemon", "stop", timeout=60).returncode == 0
    for listener in (every, only_beta, both):
        assert listener.ended.wait(30), "the stream did not end with the daemon"
        assert listener.events[-1][0] == "end"


def test_token_and_bad_filters(cli: Cli, home: Home) -> None:
    url, token = start_daemon(cli)
    auth = {"Authorization": f"Bearer {token}"}
    r = httpx.get(url + "/v1/events", timeout=10, trust_env=False)
    assert r.status_code == 401
    r = httpx.get(url + "/v1/events?kinds=state,bogus", headers=auth, timeout=10, trust_env=False)
    assert r.status_code == 400
    detail = r.json()["detail"]
    assert "'bogus'" in detail and "state" in detail and "health" in detail
    r = httpx.get(url + "/v1/events?instance=../x", headers=auth, timeout=10, trust_env=False)
    assert r.status_code == 400


def test_a_slow_subscriber_is_dropped_with_a_final_event() -> None:
    async def run() -> list[bytes]:
        bus = EventBus()
        snapshot = [{"instance": "alpha", "kind": "snapshot", "state": "stopped"}]
        body = stream(bus, lambda: snapshot, maxsize=2)
        chunks = [await anext(body)]  # subscribed now, the snapshot sent
        for i in range(5):  # nobody reads meanwhile: the third does not fit
            bus.publish(Event("alpha", EventKind.STATE, str(i), str(i + 1), "test"))
        chunks += [c async for c in body]
        assert bus.dropped_total == 1 and bus.subscribers == 0
        return chunks

    chunks = asyncio.run(run())
    kinds = [c.split(b"\n", 1)[0] for c in chunks]
    assert kinds == [b"event: snapshot", b"event: state", b"event: state", b"event: dropped"]
    assert b"dropped_total" in chunks[-1] and b"fell 2 events behind" in chunks[-1]


def test_cli_events_recorded_and_followed(cli: Cli, home: Home, tiny_model: Path) -> None:
    write_config(home, "alpha", tiny_model, free_port())
    write_config(home, "beta", tiny_model, free_port())
    assert cli("up", "alpha").returncode == 0

    out = cli("events", "--json")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert any(r["instance"] == "alpha" and r["new"] == "running" for r in rows), rows
    assert set(rows[0]) >= {"instance", "kind", "old", "new", "reason", "ts"}

    out = cli("events", "--instance", "alpha", "--kinds", "state", "--json")
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert rows and {(r["instance"], r["kind"]) for r in rows} == {("alpha", "state")}

    text = cli("events", "--instance", "alpha", "--kinds", "state").stdout.splitlines()
    assert any(" alpha state starting -> running" in line for line in text), text

    bad = cli("events", "--kinds", "nope")
    assert bad.returncode == 2 and "'nope'" in bad.stderr and "state" in bad.stderr

    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_orchestrator", "events", "-f", "--json"],
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[dict[str, Any]] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(json.loads(line))

    threading.Thread(target=read, daemon=True).start()
    seen: list[dict[str, Any]] = []

    def until(check: Any) -> bool:
        while not lines.empty():
            seen.append(lines.get())
        return any(check(e) for e in seen)

    try:
        wait_for(lambda: until(lambda e: e["kind"] == "snapshot" and e["instance"] == "beta"))
        assert cli("up", "beta").returncode == 0
        wait_for(lambda: until(lambda e: e["instance"] == "beta" and e.get("new") == "running"))
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
