"""Answers name the model asked for, and the llama.cpp router's model API (issue 20).

Real servers (llama-server and the embedded engine), started with ``-a NAME`` as the daemon
starts them, behind the gateway; the official ``openai`` and ``anthropic`` clients. The
router comparison runs the pinned llama-server in router mode over the same model.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from conftest import free_port
from helpers import LETTERS, wait_for

from llama_orchestrator.gateway.testing import (
    GatewayThread,
    ListDirectory,
    ServerInstance,
    server_argv,
)

MESSAGES: Any = [{"role": "user", "content": "hi"}]


def instance(
    binary: Path | None, model: Path, name: str, ctx: int = 256, **kw: Any
) -> ServerInstance:
    port = free_port()
    argv = server_argv(binary, model, port, ctx=ctx, extra=["-a", name])
    return ServerInstance(name, argv, port, **kw)


@pytest.fixture(scope="module")
def servers(llama_server_bin: Path, tiny_model: Path) -> Iterator[dict[str, ServerInstance]]:
    found = {
        "chat": instance(llama_server_bin, tiny_model, "chat", 4096, aliases=("org/gpt",)),
        "emb": instance(None, tiny_model, "emb", aliases=("small",)),
    }
    # A server not started with -a (a remote one): it answers its model file's path
    port = free_port()
    bare = ServerInstance("bare", server_argv(llama_server_bin, tiny_model, port), port)
    bare.answers_name = None
    found["bare"] = bare
    for inst in found.values():
        assert inst.start().ok
    yield found
    for inst in found.values():
        inst.stop()


@pytest.fixture
def gw(servers: dict[str, ServerInstance]) -> Iterator[GatewayThread]:
    with GatewayThread(ListDirectory(servers.values())) as g:
        yield g


def oai(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=60)


@pytest.mark.parametrize("asked", ["chat", "org/gpt", "emb", "small", "bare"])
def test_every_answer_names_the_model_asked_for(gw: GatewayThread, asked: str) -> None:
    client = oai(gw.url)
    done = client.chat.completions.create(model=asked, messages=MESSAGES, max_tokens=3)
    assert done.model == asked
    # letters only: each token is a whole character, so a chunk each (random bytes of the
    # tiny model can make four tokens one incomplete-then-whole UTF-8 sequence, one chunk)
    stream = client.chat.completions.create(
        model=asked, messages=MESSAGES, max_tokens=4, stream=True, extra_body=LETTERS
    )
    chunks = list(stream)
    assert len(chunks) >= 2
    assert {c.model for c in chunks} == {asked}
    text = client.completions.create(model=asked, prompt="a", max_tokens=2)
    assert text.model == asked


def test_anthropic_messages_name_the_model_asked_for(gw: GatewayThread) -> None:
    client = anthropic.Anthropic(base_url=gw.url, api_key="none", max_retries=0)
    msg = client.messages.create(model="org/gpt", max_tokens=3, messages=MESSAGES)
    assert msg.model == "org/gpt"
    # llama-server (this build) drops its message_start event when the first token is an
    # incomplete UTF-8 sequence, which the tiny model's random bytes often are, so the
    # SDK's accumulating stream helper cannot be used here: read the events themselves.
    # Every message_start that comes names the model asked for, and the stream ends.
    events = list(
        client.messages.create(model="org/gpt", max_tokens=3, messages=MESSAGES, stream=True)
    )
    starts = [e.message.model for e in events if e.type == "message_start"]
    assert set(starts) <= {"org/gpt"} and events[-1].type == "message_stop"


def test_anthropic_stream_helper_gets_a_message_start(gw: GatewayThread) -> None:
    """llama-server drops message_start when its first token is an incomplete UTF-8
    sequence (always, for the tiny model at temperature 0); the gateway puts one in, so the
    SDK's accumulating helper works and names the model asked for."""
    client = anthropic.Anthropic(base_url=gw.url, api_key="none", max_retries=0)
    for _ in range(2):
        with client.messages.stream(
            model="org/gpt", max_tokens=3, messages=MESSAGES, extra_body={"temperature": 0}
        ) as stream:
            types = [event.type for event in stream]
            final = stream.get_final_message()
        assert types[0] == "message_start" and types.count("message_start") == 1, types
        assert final.model == "org/gpt" and final.stop_reason == "max_tokens"


def test_models_retrieve(gw: GatewayThread) -> None:
    client = oai(gw.url)
    got = client.models.retrieve("org/gpt")
    assert got.id == "org/gpt"
    assert got.model_extra is not None and got.model_extra["status"] == {"value": "loaded"}
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("nope")
    assert "available models: bare, chat, emb, org/gpt, small" in str(e.value)


def test_load_and_unload(gw: GatewayThread, servers: dict[str, ServerInstance]) -> None:
    """Open WebUI's buttons: unload stops it (after the request in flight), load starts it."""

    def value() -> str:
        data = httpx.get(f"{gw.url}/v1/models").json()["data"]
        return str(next(e for e in data if e["id"] == "small")["status"]["value"])

    assert value() == "loaded"
    r = httpx.post(f"{gw.url}/models/unload", json={"model": "small"}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json() == {"success": True}
    assert value() == "unloaded" and servers["emb"].state == "stopped"
    again = httpx.post(f"{gw.url}/models/unload", json={"model": "small"})
    assert again.status_code == 400 and "not loaded" in again.json()["error"]["message"]
    r = httpx.post(f"{gw.url}/models/load", json={"model": "small"}, timeout=60)
    assert r.status_code == 200, r.text
    assert value() == "loaded"


def test_unload_waits_for_the_request_in_flight(
    gw: GatewayThread, servers: dict[str, ServerInstance]
) -> None:
    import threading

    client = oai(gw.url)
    out: dict[str, Any] = {}

    def ask() -> None:
        stream = client.chat.completions.create(
            model="chat",
            messages=MESSAGES,
            max_tokens=3000,  # long enough to be seen in flight
            stream=True,
            extra_body={"ignore_eos": True},
        )
        out["chunks"] = [c for c in stream]

    t = threading.Thread(target=ask)
    t.start()
    wait_for(lambda: servers["chat"].in_flight == 1, 30, "the request in flight")
    r = httpx.post(f"{gw.url}/models/unload", json={"model": "chat"}, timeout=60)
    t.join(60)
    assert r.status_code == 200
    assert out["chunks"][-1].choices[0].finish_reason == "length"  # not cut
    assert servers["chat"].start().ok


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("/models/load", b"{", 400, "not JSON"),
        ("/models/load", b"{}", 400, '{"model": "NAME"}'),
        ("/models/unload", b'{"model": "nope"}', 404, "available models"),
    ],
)
def test_management_refuses_bad_input(
    gw: GatewayThread, path: str, body: bytes, status: int, words: str
) -> None:
    r = httpx.post(f"{gw.url}{path}", content=body)
    assert r.status_code == status
    assert words in r.json()["error"]["message"]


def _router_entries(binary: Path, model: Path, tmp: Path) -> list[dict[str, Any]]:
    models = tmp / "router-models"
    models.mkdir()
    (models / "chat.gguf").symlink_to(model)
    port = free_port()
    proc = subprocess.Popen(
        [str(binary), "--models-dir", str(models), "--models-max", "1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:

        def entries() -> list[dict[str, Any]] | None:
            try:
                return list(httpx.get(f"http://127.0.0.1:{port}/models").json()["data"])
            except (httpx.HTTPError, ValueError, KeyError):
                return None

        before = wait_for(entries, 30, "the router's /models")
        r = httpx.post(f"http://127.0.0.1:{port}/models/load", json={"model": "chat"}, timeout=60)
        assert r.json() == {"success": True}
        wait_for(lambda: (e := entries()) and e[0]["status"]["value"] == "loaded", 60, "loaded")
        return [*before, *(entries() or [])]
    finally:
        proc.terminate()
        proc.wait(10)
        time.sleep(0)


def test_entries_have_the_routers_fields(
    gw: GatewayThread, llama_server_bin: Path, tiny_model: Path, tmp_path: Path
) -> None:
    """Field by field against the real router: every field it sends, but ``meta`` and
    ``architecture`` (what the model is, read from the GGUF by the loaded server) and
    ``status.args``/``status.preset`` (its child process's command line)."""
    unloaded, loaded = _router_entries(llama_server_bin, tiny_model, tmp_path)
    assert unloaded["status"]["value"] == "unloaded" and loaded["status"]["value"] == "loaded"
    ours = httpx.get(f"{gw.url}/models").json()["data"]
    assert ours == httpx.get(f"{gw.url}/v1/models").json()["data"]
    left_out = {"meta", "architecture"}
    for theirs in (unloaded, loaded):
        for mine in ours:
            missing = set(theirs) - set(mine) - left_out
            assert not missing, missing
            for field in ("object", "created", "aliases", "tags", "can_remove"):
                assert type(mine[field]) is type(theirs[field]), field
            assert set(mine["status"]) == set(theirs["status"]) - {"args", "preset"}
    assert {e["status"]["value"] for e in ours} == {"loaded"}
    assert json.dumps(ours)  # plain JSON
