"""The Ollama API on the gateway (issue 20), driven by the official ``ollama`` client.

Real servers behind the gateway: llama-server (``chat``, alias ``llama3``), the embedded
engine (``emb``) and llama-server with ``--embeddings`` (``vectors``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest
from conftest import free_port

from llama_orchestrator.gateway.testing import (
    GatewayThread,
    ListDirectory,
    ServerInstance,
    server_argv,
)

MESSAGES: Any = [{"role": "user", "content": "hi"}]


def instance(binary: Path | None, model: Path, name: str, *extra: str, **kw: Any) -> ServerInstance:
    port = free_port()
    return ServerInstance(
        name, server_argv(binary, model, port, extra=["-a", name, *extra]), port, **kw
    )


@pytest.fixture(scope="module")
def servers(llama_server_bin: Path, tiny_model: Path) -> Iterator[dict[str, ServerInstance]]:
    found = {
        "chat": instance(llama_server_bin, tiny_model, "chat", aliases=("llama3",)),
        "emb": instance(None, tiny_model, "emb", on_demand=True),
        "vectors": instance(
            llama_server_bin, tiny_model, "vectors", "--embeddings", "--pooling", "mean"
        ),
    }
    found["evectors"] = instance(None, tiny_model, "evectors", "--embeddings", "--pooling", "mean")
    for name in ("chat", "vectors", "evectors"):
        assert found[name].start().ok
    yield found
    for inst in found.values():
        inst.stop()


@pytest.fixture
def gw(servers: dict[str, ServerInstance]) -> Iterator[GatewayThread]:
    with GatewayThread(ListDirectory(servers.values())) as g:
        yield g


def client(gw: GatewayThread) -> ollama.Client:
    return ollama.Client(host=gw.url, timeout=60)


def test_version_list_show_and_ps(gw: GatewayThread) -> None:
    c = client(gw)
    assert httpx.get(gw.url).text == "Ollama is running"
    assert httpx.get(f"{gw.url}/api/version").json()["version"]
    names = [m.model for m in c.list().models]
    assert names == ["chat", "emb", "evectors", "llama3", "vectors"]
    running = {m.model for m in c.ps().models}
    assert {"chat", "llama3", "vectors"} <= running
    shown = c.show("llama3")
    assert shown.modelinfo == {"context_length": 256}
    with pytest.raises(ollama.ResponseError) as e:
        c.show("nope")
    assert e.value.status_code == 404 and "nope" in e.value.error


def predicted(answer: Any, n: int) -> bool:
    """``num_predict`` honoured: ``n`` tokens when cut at the limit ("length"); the tiny
    model's random weights may also sample its end-of-text token first ("stop")."""
    if answer.done_reason == "length":
        return bool(answer.eval_count == n)
    return bool(answer.done_reason == "stop" and 0 <= answer.eval_count <= n)


@pytest.mark.parametrize("model", ["chat", "llama3", "emb"])
def test_chat_streaming_and_not(gw: GatewayThread, model: str) -> None:
    c = client(gw)
    whole = c.chat(model=model, messages=MESSAGES, options={"num_predict": 4, "seed": 1})
    assert whole.done and whole.model == model and whole.message.role == "assistant"
    assert predicted(whole, 4)
    assert whole.prompt_eval_count and whole.total_duration
    parts = list(
        c.chat(
            model=model,
            messages=MESSAGES,
            stream=True,
            options={"num_predict": 4, "temperature": 0},
        )
    )
    assert [p.done for p in parts][-1] is True and not any(p.done for p in parts[:-1])
    assert {p.model for p in parts} == {model}
    assert predicted(parts[-1], 4)
    assert "".join(p.message.content or "" for p in parts)


def test_generate(gw: GatewayThread) -> None:
    c = client(gw)
    whole = c.generate(model="chat", prompt="a", system="be brief", options={"num_predict": 3})
    assert whole.done and predicted(whole, 3) and whole.response is not None
    parts = list(c.generate(model="chat", prompt="a", stream=True, options={"num_predict": 3}))
    assert parts[-1].done and predicted(parts[-1], 3)
    raw = c.generate(model="chat", prompt="abc", raw=True, options={"num_predict": 2})
    assert predicted(raw, 2)


@pytest.mark.parametrize("model", ["vectors", "evectors"])
def test_embed(gw: GatewayThread, model: str) -> None:
    """On llama-server and on the embedded engine (``--embeddings``, issue 20)."""
    c = client(gw)
    got = c.embed(model=model, input=["one", "two"])
    assert len(got.embeddings) == 2 and len(got.embeddings[0]) == 64
    old = c.embeddings(model=model, prompt="one")
    assert len(old.embedding) == 64
    with pytest.raises(ollama.ResponseError) as e:
        c.embed(model="chat", input="one")
    assert "embeddings" in e.value.error


def test_keep_alive_zero_unloads_and_an_empty_prompt_loads(
    gw: GatewayThread, servers: dict[str, ServerInstance]
) -> None:
    c = client(gw)
    loaded = c.generate(model="emb", prompt="")
    assert loaded.done_reason == "load" and servers["emb"].routable
    c.chat(model="emb", messages=MESSAGES, options={"num_predict": 1}, keep_alive=0)
    from helpers import wait_for

    wait_for(lambda: servers["emb"].state == "stopped", 30, "emb stopped after keep_alive 0")
    assert c.chat(model="emb", messages=MESSAGES, options={"num_predict": 1}).done  # on demand
    unloaded = c.generate(model="emb", prompt="", keep_alive=0)
    assert unloaded.done_reason == "unload" and servers["emb"].state == "stopped"


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("/api/chat", b"{", 400, "not JSON"),
        ("/api/chat", b"[]", 400, "JSON object"),
        ("/api/chat", b"{}", 400, "'model' is required"),
        ("/api/chat", b'{"model": "nope", "messages": []}', 404, "not found"),
        ("/api/chat", b'{"model": "chat", "messages": "hi"}', 400, "'messages' must be a list"),
        ("/api/chat", b'{"model": "chat", "messages": [{}]}', 400, "messages[0] needs a 'role'"),
        ("/api/chat", b'{"model": "chat", "messages": [], "options": 3}', 400, "'options'"),
        ("/api/chat", b'{"model": "chat", "messages": [], "format": 3}', 400, "'format'"),
        ("/api/generate", b'{"model": "chat", "prompt": 3}', 400, "'prompt'"),
        ("/api/chat", b'{"model": "chat", "messages": [], "tools": [1]}', 400, "'tools'"),
        (
            "/api/chat",
            b'{"model": "chat", "messages": [{"role": "user", "content": "x"}], "tools": [{}]}',
            400,
            '"function": {"name"',
        ),
        ("/api/embed", b'{"model": "vectors", "input": 3}', 400, "'input'"),
        ("/api/embeddings", b'{"model": "vectors"}', 400, "'prompt'"),
        ("/api/show", b"{}", 400, "'model' is required"),
        ("/api/pull", b'{"model": "x"}', 501, "model.path"),
        ("/api/delete", b'{"model": "x"}', 501, "llama-orch create"),
        ("/api/nothing", b"{}", 404, "no route"),
    ],
)
def test_bad_input_gets_ollamas_error_shape(
    gw: GatewayThread, path: str, body: bytes, status: int, words: str
) -> None:
    r = httpx.post(f"{gw.url}{path}", content=body)
    assert r.status_code == status, r.text
    assert list(r.json()) == ["error"] and words in r.json()["error"], r.text


def test_requests_are_recorded(gw: GatewayThread) -> None:
    answer = client(gw).chat(model="chat", messages=MESSAGES, options={"num_predict": 2})
    rec = gw.records[-1]
    assert (rec.path, rec.model, rec.instance, rec.status) == ("/api/chat", "chat", "chat", 200)
    assert predicted(answer, 2) and rec.completion_tokens == answer.eval_count


def test_keys_apply_and_a_refusal_has_ollamas_shape(servers: dict[str, ServerInstance]) -> None:
    from llama_orchestrator.gateway.settings import GatewaySettings

    key = "sk-ollama-test-key-0123456789"
    settings = GatewaySettings(port=0, api_keys=(key,))
    with GatewayThread(ListDirectory(servers.values()), settings) as gw:
        keyed = ollama.Client(host=gw.url, headers={"Authorization": f"Bearer {key}"})
        assert keyed.chat(model="chat", messages=MESSAGES, options={"num_predict": 1}).done
        with pytest.raises(ollama.ResponseError) as e:
            client(gw).list()
    assert e.value.status_code == 401 and "API key" in e.value.error


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(None, None), (0, 0), ("0", 0), ("0s", 0), (300, 300), ("5m", 300), ("1h30m", 5400),
     ("1.5s", 2), ("250ms", 1), (-1, -1), ("-1m", -1), ("45", 45)],
)  # fmt: skip
def test_keep_alive_durations(value: Any, seconds: int | None) -> None:
    from llama_orchestrator.gateway.ollama_translate import keep_alive

    assert keep_alive(value) == seconds


def test_keep_alive_reaches_the_instance(
    gw: GatewayThread, servers: dict[str, ServerInstance]
) -> None:
    """A duration becomes the instance's idle ttl (the daemon's seats), -1 never."""
    c = client(gw)
    c.chat(model="llama3", messages=MESSAGES, options={"num_predict": 1}, keep_alive="5m")
    from helpers import wait_for

    wait_for(lambda: servers["chat"].kept_alive == 300, 10, "keep_alive 5m")
    c.generate(model="chat", prompt="a", options={"num_predict": 1}, keep_alive=-1)
    wait_for(lambda: servers["chat"].kept_alive == 0, 10, "keep_alive -1")
    r = httpx.post(
        f"{gw.url}/api/chat", json={"model": "chat", "messages": MESSAGES, "keep_alive": "soon"}
    )
    assert r.status_code == 400 and "'keep_alive' 'soon' is not a duration" in r.json()["error"]


def test_fuzzed_bodies_get_an_answer_or_ollamas_error(gw: GatewayThread) -> None:
    """Random bodies on every Ollama model route: an answer, or ``{"error": str}`` with a
    4xx, never a traceback or a 5xx."""
    import contextlib

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from llama_orchestrator.gateway.ollama_translate import keep_alive

    scalars = (
        st.none() | st.booleans() | st.integers(-5, 5) | st.floats(-2, 2) | st.text(max_size=5)
    )
    values = st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
        ),
        max_leaves=6,
    )
    keys = ["messages", "prompt", "options", "format", "keep_alive", "stream", "input",
            "images", "tools", "raw", "system"]  # fmt: skip
    good_message = st.fixed_dictionaries({"role": st.just("user"), "content": st.text(max_size=5)})
    bodies = st.fixed_dictionaries(
        {"model": st.sampled_from(["chat", "vectors", "nope", 3])},
        optional={
            **{k: values for k in keys},
            "messages": st.lists(good_message | values, max_size=2) | values,
            "options": st.fixed_dictionaries(
                {},
                optional={"num_predict": st.integers(-2, 3), "temperature": values, "stop": values},
            )
            | values,
            "keep_alive": st.sampled_from(["5m", -1, "x"]) | values,
        },
    )
    routes = ["/api/chat", "/api/generate", "/api/embed", "/api/embeddings", "/api/show"]
    failures: list[str] = []

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(routes), bodies)
    def check(route: str, body: dict[str, Any]) -> None:
        with contextlib.suppress(ValueError):
            if keep_alive(body.get("keep_alive")) == 0:
                body["keep_alive"] = "5m"  # 0 would stop the shared instances
        r = httpx.post(f"{gw.url}{route}", json=body, timeout=60)
        if r.status_code == 200:
            return
        try:
            doc = r.json()
            shaped = list(doc) == ["error"] and isinstance(doc["error"], str)
        except ValueError:
            shaped = False
        if r.status_code >= 500 or not shaped:
            failures.append(f"{route} {json.dumps(body)} -> {r.status_code} {r.text[:200]}")

    check()
    assert not failures, "\n".join(failures[:10])
    assert gw.records and all(r.status < 500 for r in gw.records)
