"""Affinity across replicas with two real llama-server replicas of the tiny
model behind the gateway: a conversation's turn 2 lands on the replica that served its
turn 1 (the ``X-Llama-Orch-Instance`` header says which), by its ``x-session-id`` or by its
messages alone; with affinity off, the rotation sends it to the other one."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import free_port

from llama_orchestrator.gateway.settings import GatewaySettings
from llama_orchestrator.gateway.testing import (
    GatewayThread,
    ListDirectory,
    ServerInstance,
    server_argv,
)


def replica(binary: Path, model: Path, name: str) -> ServerInstance:
    port = free_port()
    argv = server_argv(binary, model, port, parallel=2, ctx=512)
    return ServerInstance(name, argv, port, aliases=("pool",), slots=2)


@pytest.fixture(scope="module")
def replicas(llama_server_bin: Path, tiny_model: Path) -> Iterator[list[ServerInstance]]:
    found = [replica(llama_server_bin, tiny_model, n) for n in ("rep-a", "rep-b")]
    with ThreadPoolExecutor(2) as pool:
        for result in pool.map(lambda i: i.start(), found):
            assert result.ok, result.message
    yield found
    for inst in found:
        inst.stop()


def chat(url: str, messages: list[dict[str, str]], session: str | None = None) -> tuple[str, str]:
    """The instance that answered, and the answer's text."""
    headers = {"x-session-id": session} if session else {}
    body: dict[str, Any] = {"model": "pool", "messages": messages, "max_tokens": 3}
    r = httpx.post(
        f"{url}/v1/chat/completions", json=body, headers=headers, trust_env=False, timeout=60
    )
    assert r.status_code == 200, r.text
    return r.headers["x-llama-orch-instance"], r.json()["choices"][0]["message"]["content"]


def conversations(url: str, session: bool) -> list[tuple[str, str]]:
    """Four conversations of two turns, one after the other: (turn 1's, turn 2's) replica."""
    out = []
    for c in range(4):
        sid = f"conv-{c}" if session else None
        history = [{"role": "user", "content": f"conversation {c}: tell me a story"}]
        first, answer = chat(url, history, sid)
        history += [
            {"role": "assistant", "content": answer},
            {"role": "user", "content": "and then?"},
        ]
        second, _ = chat(url, history, sid)
        out.append((first, second))
    return out


@pytest.mark.parametrize("session", [True, False], ids=["x-session-id", "messages"])
def test_turn_2_lands_on_the_replica_of_turn_1(
    replicas: list[ServerInstance], session: bool
) -> None:
    with GatewayThread(ListDirectory(replicas)) as g:
        served = conversations(g.url, session)
        assert all(first == second for first, second in served), served
        assert {first for first, _ in served} == {"rep-a", "rep-b"}  # turn 1s still rotate
        metrics = httpx.get(f"{g.url}/metrics", trust_env=False).text
        assert 'llama_orch_affinity_total{model="pool",result="hit"} 4.0' in metrics
        assert 'llama_orch_affinity_total{model="pool",result="fallback"} 0.0' in metrics


def test_without_affinity_the_rotation_sends_turn_2_elsewhere(
    replicas: list[ServerInstance],
) -> None:
    with GatewayThread(ListDirectory(replicas), GatewaySettings(port=0, affinity=False)) as g:
        served = conversations(g.url, True)
        assert all(first != second for first, second in served), served
        assert (
            "llama_orch_affinity_total{" not in httpx.get(f"{g.url}/metrics", trust_env=False).text
        )


def test_ollama_chat_keeps_its_conversation_on_one_replica_too(
    replicas: list[ServerInstance],
) -> None:
    with GatewayThread(ListDirectory(replicas)) as g:
        served = []
        for c in range(2):
            history = [{"role": "user", "content": f"conversation {c}: hello"}]
            for _ in range(2):
                body = {"model": "pool", "messages": history, "stream": False}
                body["options"] = {"num_predict": 3}
                r = httpx.post(f"{g.url}/api/chat", json=body, trust_env=False, timeout=60)
                assert r.status_code == 200, r.text
                served.append(r.headers["x-llama-orch-instance"])
                history = [*history, r.json()["message"], {"role": "user", "content": "more"}]
        assert served[0] == served[1] and served[2] == served[3] and served[0] != served[2]
