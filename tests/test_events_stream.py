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

from llama_orchestrator.daemon.api.events import stream
from llama_orchestrator.daemon.events import Event, EventBus, EventKind
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


def test_snapshot_lists_instances_never_started_with_the_gateway_off(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    # Without the gateway nothing has asked the daemon about alpha and beta yet; they are
    # still every instance there is.
    home.root.mkdir(parents=True, exist_ok=True)
    (home.root / "gateway.json").write_text(json.dumps({"enabled": False}))
    write_config(home, "alpha", tiny_model, free_port())
    write_config(home, "beta", tiny_model, free_port())
    url, token = start_daemon(cli)
    listener = Listener(url, token)
    wait_for(lambda: len(listener.of("snapshot")) == 2, what="a snapshot of both")
    for row in listener.of("snapshot"):
        assert (row["state"], row["pid"], row["restart_count"]) == ("stopped", None, 0), row


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


def test_hello_names_every_kind_first_and_the_web_page_listens_for_those() -> None:
    """The web page's listeners and its buttons' state groups come from the stream's first
    message, not copies (issue 17); without ``hello`` the stream starts with the snapshot,
    as before."""
    import llama_orchestrator.web

    async def first_two(hello: bool) -> list[bytes]:
        snapshot = [{"instance": "alpha", "kind": "snapshot", "state": "stopped"}]
        body = stream(EventBus(), lambda: snapshot, hello=hello)
        chunks = [await anext(body), await anext(body)]
        await body.aclose()
        return chunks

    hello, snap = asyncio.run(first_two(True))
    assert hello.startswith(b"event: hello\n") and snap.startswith(b"event: snapshot\n")
    kinds = json.loads(hello.split(b"data: ", 1)[1])["kinds"]
    assert {"snapshot", "dropped", "end"} | {k.value for k in EventKind} <= set(kinds)
    assert asyncio.run(first_two(False))[0].startswith(b"event: snapshot\n")
    js = (Path(llama_orchestrator.web.__file__).parent / "static" / "app.js").read_text()
    assert "/v1/events?hello=1" in js
    named = {k.value for k in EventKind if f'"{k.value}"' in js}
    assert named <= {"request", "start_refused"}  # the two it treats apart, no list of all
    # the groups of states the page's buttons follow come with it, not from a copy
    states = json.loads(hello.split(b"data: ", 1)[1])["states"]
    assert states == {
        "alive": ["starting", "running", "stopping"],
        "at_rest": ["stopped", "exited", "fatal"],
    }
    core = (Path(llama_orchestrator.web.__file__).parent / "static" / "core.js").read_text()
    assert '"exited"' not in core and '"starting"' not in core


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


# --- ?logs=NAME: an instance's log lines as events ----------------------------------------


def test_logs_of_an_instance_as_events_from_a_real_server(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    write_config(home, "alpha", tiny_model, free_port())
    assert cli("up", "alpha").returncode == 0
    url, token = start_daemon(cli)
    lines = Listener(url, token, [("logs", "alpha"), ("kinds", "log"), ("tail", "3")])
    mixed = Listener(url, token, [("logs", "alpha"), ("kinds", "state")])
    wait_for(lambda: len(lines.of("log")) >= 3, what="the last lines of alpha's logs")
    assert lines.status == 200
    first = lines.of("log")[0]
    assert set(first) == {"instance", "kind", "ts", "stream", "file", "line"}
    assert first["instance"] == "alpha" and first["stream"] in ("stdout", "stderr")
    assert first["file"] == str(home.root / "logs" / "alpha" / f"{first['stream']}.log")
    assert not lines.of("state")  # kinds=log: the lines alone

    # a restart writes its start marker to both files, and the new server logs
    assert cli("restart", "alpha").returncode == 0

    def marker(listener: Listener) -> set[str]:
        return {
            d["stream"]
            for d in listener.of("log", "alpha")
            if d["line"].startswith("==== llama-orch: starting alpha")
        }

    wait_for(lambda: marker(lines), what="the restart's marker line on the stream")
    wait_for(lambda: mixed.reached("alpha", "running"), what="state events beside the lines")
    wait_for(lambda: marker(mixed), what="log lines beside the state events")
    assert {k for k, _d in mixed.events} <= {"snapshot", "state", "log"}

    text = cli.home.root / "logs" / "alpha" / "stdout.log"
    with text.open("a") as f:
        f.write("a line written by hand\n")
    wait_for(
        lambda: any(d["line"] == "a line written by hand" for d in lines.of("log")),
        what="a line appended to the file",
    )

    auth = {"Authorization": f"Bearer {token}"}
    r = httpx.get(url + "/v1/events?logs=nobody", headers=auth, timeout=10, trust_env=False)
    assert r.status_code == 404 and "nobody" in r.json()["detail"]
    r = httpx.get(url + "/v1/events?kinds=log", headers=auth, timeout=10, trust_env=False)
    assert r.status_code == 400 and "logs=NAME" in r.json()["detail"]
    r = httpx.get(url + "/v1/events?logs=../x", headers=auth, timeout=10, trust_env=False)
    assert r.status_code == 400


def test_cli_events_logs_prints_the_lines(cli: Cli, home: Home, tiny_model: Path) -> None:
    write_config(home, "alpha", tiny_model, free_port())
    assert cli("up", "alpha").returncode == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_orchestrator", "events", "--logs", "alpha", "--kinds", "log"],
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.put(line)

    threading.Thread(target=read, daemon=True).start()
    got: list[str] = []

    def printed(text: str) -> bool:
        while not seen.empty():
            got.append(seen.get())
        return any(text in line for line in got)

    try:
        log = home.root / "logs" / "alpha" / "stderr.log"

        def append() -> bool:  # until the stream is followed, the line is not seen
            with log.open("a") as f:
                f.write("written for the CLI\n")
            return printed(" alpha log stderr| written for the CLI")

        wait_for(append, what="the CLI printing a log line")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    bad = cli("events", "--kinds", "log")
    assert bad.returncode == 2 and "--logs NAME" in bad.stderr


def test_a_slow_log_client_is_dropped_with_a_final_event(tmp_path: Path) -> None:
    from llama_orchestrator.daemon.api.log_events import LogFeed

    out, err = tmp_path / "stdout.log", tmp_path / "stderr.log"
    out.write_text("")

    async def run() -> tuple[list[bytes], LogFeed]:
        bus = EventBus()
        feed = LogFeed("alpha", {"stdout": out, "stderr": err}, maxsize=3, interval=0.01)
        body = stream(bus, list, logs=feed)
        pending = asyncio.ensure_future(anext(body))  # the stream starts, the feed follows
        while not feed.running:
            await asyncio.sleep(0.01)
        out.write_text("".join(f"line {i}\n" for i in range(10)))  # nobody reads meanwhile
        for _ in range(1000):
            if feed.dropped:
                break
            await asyncio.sleep(0.01)
        chunks = [await pending] + [c async for c in body]
        return chunks, feed

    chunks, feed = asyncio.run(run())
    kinds = [c.split(b"\n", 1)[0] for c in chunks]
    assert kinds == [b"event: log"] * 3 + [b"event: dropped"], chunks
    assert b'"line 0"' in chunks[0] and b"fell 3 log lines behind" in chunks[-1]
    wait_for(lambda: not feed.running, 10, "the follower thread to end")


def test_the_log_follower_ends_when_the_client_goes(tmp_path: Path) -> None:
    """Through a real HTTP server: a client that disconnects ends its follower thread."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    from llama_orchestrator.daemon.api.log_events import LogFeed

    out = tmp_path / "stdout.log"
    out.write_text("first\n")
    feeds: list[LogFeed] = []
    bus = EventBus()

    async def events(request: Any) -> StreamingResponse:
        feed = LogFeed("alpha", {"stdout": out}, tail=1, interval=0.01)
        feeds.append(feed)
        return StreamingResponse(stream(bus, list, logs=feed), media_type="text/event-stream")

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(Starlette(routes=[Route("/e", events)]), port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, what="the test server")
        with httpx.stream("GET", f"http://127.0.0.1:{port}/e", timeout=30, trust_env=False) as r:
            for line in r.iter_lines():
                if line.startswith("data:"):
                    assert json.loads(line[5:])["line"] == "first"
                    break
            assert feeds[0].running
        wait_for(lambda: not feeds[0].running, 10, "the follower to end after the disconnect")
    finally:
        server.should_exit = True
        thread.join(10)
