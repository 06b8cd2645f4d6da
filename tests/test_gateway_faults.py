"""Faults under a request, on real llama-servers (issue 19): a stream whose instance dies
mid-way ends with an error event in its own format and counts as 502 in /metrics; a
request whose server died under it is answered 502 saying so, and never replayed on
another replica (a prompt that crashes llama-server must not crash every replica)."""

from __future__ import annotations

import json
import socket
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from conftest import Cli, free_port, write_config
from helpers import wait_for

from llama_orchestrator.gateway.testing import (
    GatewayThread,
    ListDirectory,
    ServerInstance,
    server_argv,
)
from llama_orchestrator.home import Home

MESSAGES = [{"role": "user", "content": "hi"}]
LONG = {"max_tokens": 15000, "ignore_eos": True}


def instance(binary: Path, model: Path, name: str, **kw: Any) -> ServerInstance:
    port = free_port()
    argv = server_argv(binary, model, port, parallel=1, ctx=16384)
    return ServerInstance(name, argv, port, **kw)


def slot_busy(port: int) -> bool:
    r = httpx.get(f"http://127.0.0.1:{port}/slots", trust_env=False, timeout=5)
    return any(slot["is_processing"] for slot in r.json())


def stream_until_cut(
    url: str, path: str, body: dict[str, Any], victim: ServerInstance, first: bytes = b"data: "
) -> bytes:
    """A raw streaming request; once its first event is in, ``victim`` is killed. What the
    client got, to the gateway's close."""
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=30)
    data = json.dumps(body).encode()
    s.sendall(
        b"POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (path.encode(), len(data), data)
    )
    got = b""
    while first not in got:
        piece = s.recv(65536)
        assert piece, got
        got += piece
    victim.kill()
    s.settimeout(10)
    while piece := s.recv(65536):
        got += piece
    s.close()
    return got


def dechunk(raw: bytes) -> bytes:
    """The body of a chunked answer (after its head)."""
    rest, body = raw.split(b"\r\n\r\n", 1)[1], b""
    while rest:
        size_line, rest = rest.split(b"\r\n", 1)
        size = int(size_line, 16)
        body, rest = body + rest[:size], rest[size + 2 :]
    return body


def requests_total(g: GatewayThread, model: str, code: str) -> float:
    text = httpx.get(f"{g.url}/metrics", trust_env=False, timeout=10).text
    for line in text.splitlines():
        labels = f'model="{model}"' in line and f'code="{code}"' in line
        if line.startswith("llama_orch_requests_total{") and labels:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_cut_stream_ends_with_an_error_event_and_counts_as_502(
    llama_server_bin: Path, tiny_model: Path
) -> None:
    # --ignore-eos: every stream runs until it is cut (the tiny model samples its
    # end-of-text token now and then, and the Anthropic and Ollama bodies cannot ask)
    port = free_port()
    argv = server_argv(llama_server_bin, tiny_model, port, ctx=16384, extra=["--ignore-eos"])
    victim = ServerInstance("victim", argv, port)
    assert victim.start().ok
    try:
        with GatewayThread(ListDirectory([victim])) as g:
            # OpenAI's format: the client raises, it does not see a finished stream
            c = openai.OpenAI(base_url=f"{g.url}/v1", api_key="x", max_retries=0, timeout=30)
            stream = c.chat.completions.create(
                model="victim", messages=MESSAGES, stream=True, extra_body=LONG
            )
            first = next(iter(stream))
            assert first.choices
            wait_for(lambda: slot_busy(victim.port), what="generation to start")
            victim.kill()
            with pytest.raises(openai.APIError, match=r"cut off.*mid-response"):
                for _ in stream:
                    pass
            wait_for(lambda: victim.in_flight == 0, timeout=5, what="the lease to end")
            assert requests_total(g, "victim", "502") == 1
            assert g.records[-1].status == 502 and "mid-response" in (g.records[-1].error or "")

            # Anthropic's format on /v1/messages: `event: error`, then the chunked end
            assert victim.start().ok
            body = {"model": "victim", "messages": MESSAGES, "stream": True, "max_tokens": 15000}
            raw = stream_until_cut(g.url, "/v1/messages", body, victim)
            assert raw.endswith(b"\r\n0\r\n\r\n")
            event = dechunk(raw).rstrip(b"\n").rsplit(b"\n\n", 1)[1]
            assert event.startswith(b"event: error\ndata: "), event
            doc = json.loads(event.split(b"data: ", 1)[1])
            assert doc["type"] == "error" and doc["error"]["type"] == "api_error"
            assert "cut off" in doc["error"]["message"]
            wait_for(lambda: requests_total(g, "victim", "502") == 2, what="the second 502")

            # Ollama's format on /api/chat: a last line with "error"
            assert victim.start().ok
            body = {"model": "victim", "messages": MESSAGES, "options": {"num_predict": 15000}}
            raw = stream_until_cut(g.url, "/api/chat", body, victim, first=b'"message"')
            assert raw.endswith(b"\r\n0\r\n\r\n")
            last = json.loads(dechunk(raw).strip().rsplit(b"\n", 1)[1])
            assert "cut off" in last["error"], last
    finally:
        victim.stop()


def test_a_request_whose_server_died_under_it_is_502_never_replayed(
    llama_server_bin: Path, tiny_model: Path
) -> None:
    """Sent on a reused pooled connection (the stale keep-alive retry used to hand it to
    the other replica): a replica killed under it answers 502, and the other replica
    never sees it."""
    a = instance(llama_server_bin, tiny_model, "rep-a", aliases=("pool",))
    b = instance(llama_server_bin, tiny_model, "rep-b", aliases=("pool",))
    for rep in (a, b):
        assert rep.start().ok
        rep.track_exit = False  # the daemon has not noticed the death yet
    try:
        with GatewayThread(ListDirectory([a, b])) as g:
            for _ in range(4):  # pooled keep-alive connections to both replicas
                r = httpx.post(
                    f"{g.url}/v1/completions",
                    json={"model": "pool", "prompt": "x", "max_tokens": 1},
                    trust_env=False,
                    timeout=30,
                )
                assert r.status_code == 200
            served_before = {rep.name: rep.leases for rep in (a, b)}
            result: dict[str, httpx.Response] = {}

            def long() -> None:
                body = {"model": "pool", "messages": MESSAGES, **LONG}
                result["r"] = httpx.post(
                    f"{g.url}/v1/chat/completions", json=body, trust_env=False, timeout=30
                )

            t = threading.Thread(target=long)
            t.start()
            busy = wait_for(
                lambda: next((r for r in (a, b) if slot_busy(r.port)), None), what="a busy slot"
            )
            other = b if busy is a else a
            busy.kill()
            t.join(15)
            assert not t.is_alive()
            r = result["r"]
            assert r.status_code == 502, r.text
            assert r.headers["x-llama-orch-instance"] == busy.name
            message = r.json()["error"]["message"]
            assert busy.name in message and "closed the connection" in message, message
            assert other.leases == served_before[other.name]  # never replayed there
    finally:
        a.stop()
        b.stop()


def test_a_stream_whose_instance_is_stopped_under_it_says_so(
    llama_server_bin: Path, tiny_model: Path
) -> None:
    """`down` (SIGTERM) under a stream: llama-server closes the connection as it exits;
    the client gets the error event, not a stream that merely stops."""
    victim = instance(llama_server_bin, tiny_model, "victim")
    assert victim.start().ok
    try:
        with GatewayThread(ListDirectory([victim])) as g:
            c = openai.OpenAI(base_url=f"{g.url}/v1", api_key="x", max_retries=0, timeout=30)
            stream = c.completions.create(model="victim", prompt="x", stream=True, extra_body=LONG)
            assert next(iter(stream)).choices
            stopping = threading.Thread(target=victim.stop)
            stopping.start()
            with pytest.raises(openai.APIError, match=r"cut off"):
                for _ in stream:
                    pass
            stopping.join(15)
            wait_for(lambda: requests_total(g, "victim", "502") == 1, what="the 502")
    finally:
        victim.stop()


def test_a_stream_ended_cleanly_before_its_last_event_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An instance that ends its stream (a clean chunked end) before `data: [DONE]`: the
    client sees an error event, not a whole answer, and it counts as 502. (Fault
    injection: a real llama-server cannot be made to end a stream that way at will.)"""
    monkeypatch.setenv("FAKE_STREAM_SHORT", "1")
    port = free_port()
    fake = Path(__file__).with_name("fakeserver.py")
    short = ServerInstance("short", [sys.executable, str(fake), "--port", str(port)], port)
    assert short.start().ok
    try:
        with GatewayThread(ListDirectory([short])) as g:
            c = openai.OpenAI(base_url=f"{g.url}/v1", api_key="x", max_retries=0, timeout=30)
            stream = c.chat.completions.create(model="short", messages=MESSAGES, stream=True)
            got = []
            with pytest.raises(openai.APIError, match=r"cut off.*before its final event"):
                for piece in stream:
                    got.append(piece.choices[0].delta.content)
            assert got == ["x"]  # what the instance did send came through first
            wait_for(lambda: requests_total(g, "short", "502") == 1, what="the 502")
            assert "before its final event" in (g.records[-1].error or "")
            # A whole answer (not streamed) from the same instance is untouched.
            whole = c.chat.completions.create(model="short", messages=MESSAGES)
            assert whole.choices[0].message.content == "x"
    finally:
        short.stop()


def test_a_gateway_port_held_by_an_instance_names_it(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    """Not "another program has the port": the home's own instance, by name."""
    home.root.mkdir(parents=True, exist_ok=True)
    (home.root / "gateway.json").write_text(json.dumps({"port": free_port()}))
    port = free_port()
    write_config(home, "alpha", tiny_model, port)
    assert cli("up", "alpha").returncode == 0
    assert cli("daemon", "stop").returncode == 0  # alpha runs on, re-adopted below
    (home.root / "gateway.json").write_text(json.dumps({"port": port}))
    assert cli("daemon", "start").returncode == 0
    out = cli("gateway", "status")
    assert out.returncode == 1
    assert f"127.0.0.1:{port}: it is instance 'alpha''s server.port" in out.stdout, out.stdout
    assert "another program" not in out.stdout
