"""The client-compatibility figures (issue 20): what the Ollama route and an alias add.

    .venv/bin/python bench/bench_gateway.py --only clients [--quick]

One llama-server (the tiny model, ``-np 1``, started with ``-a tiny`` as the daemon starts
every instance), and ``python -m llama_orchestrator.gateway`` in front of it with the
alias ``tiny-alias``. Sequential keep-alive requests, rounds interleaved; each row is the
median of the per-round differences to the same request sent straight to llama-server:

* ``/v1/chat/completions`` naming the instance: relayed byte for byte (the floor);
* the same naming the alias: the answer's ``model`` renamed on the way (gateway/rename.py);
* ``/api/chat`` with ``stream: false``: translated both ways (gateway/ollama*.py);
* streamed, to the first chunk: ``/v1/chat/completions`` and ``/api/chat`` (NDJSON).

The target is ``/api/chat`` within 0.2 ms of ``/v1/chat/completions``.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from bench_gateway import Client, free_port, http_request, log, server_argv, started

MESSAGES = [{"role": "user", "content": "hi"}]


def _cases(direct: int, gw: int) -> dict[str, tuple[int, bytes, bool]]:
    """name -> (port, request bytes, streamed)."""

    def oai(model: str, port: int, stream: bool = False) -> bytes:
        body = {"model": model, "messages": MESSAGES, "max_tokens": 4 if stream else 1}
        if stream:
            body["stream"] = True
        return http_request("/v1/chat/completions", body, port)

    def ollama(stream: bool) -> bytes:
        body = {"model": "tiny", "messages": MESSAGES, "stream": stream,
                "options": {"num_predict": 4 if stream else 1}}  # fmt: skip
        return http_request("/api/chat", body, gw)

    return {
        "direct": (direct, oai("tiny", direct), False),
        "v1 (instance name)": (gw, oai("tiny", gw), False),
        "v1 (alias, renamed)": (gw, oai("tiny-alias", gw), False),
        "api/chat": (gw, ollama(False), False),
        "direct stream": (direct, oai("tiny", direct, True), True),
        "v1 stream": (gw, oai("tiny", gw, True), True),
        "api/chat stream": (gw, ollama(True), True),
    }


async def clients_figures(binary: str, model: Path, quick: bool) -> dict[str, Any]:
    rounds, per_round = (6, 50) if quick else (15, 100)
    direct, gw = free_port(), free_port()
    argv = [*server_argv(binary, model, direct, 1), "-a", "tiny"]
    upstream = f"tiny=http://127.0.0.1:{direct},slots=1,aliases=tiny-alias"
    gateway = [sys.executable, "-m", "llama_orchestrator.gateway", "--port", str(gw),
               "--upstream", upstream]  # fmt: skip
    with contextlib.ExitStack() as stack:
        stack.enter_context(started(argv, direct, "llama-server"))
        stack.enter_context(started(gateway, gw, "gateway"))
        cases = _cases(direct, gw)
        clients = {name: Client(port) for name, (port, _, _) in cases.items()}
        for name, (_, data, _) in cases.items():  # warm-up, and each answer checked
            for _ in range(20):
                resp, _, _ = await clients[name].request(data)
            body = b"".join(resp.body)
            if resp.status != 200:
                raise RuntimeError(f"{name}: HTTP {resp.status}: {body[:300]!r}")
            if name == "v1 (alias, renamed)" and json.loads(body)["model"] != "tiny-alias":
                raise RuntimeError(f"{name}: not renamed: {body[:300]!r}")
        per: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(rounds):
            for name, (_, data, stream) in cases.items():
                samples = []
                for _ in range(per_round):
                    _, first, total = await clients[name].request(data)
                    samples.append(first if stream else total)
                per[name].append(statistics.median(samples))
        for c in clients.values():
            c.close()

    def added(name: str, base: str) -> float:
        return statistics.median(x - y for x, y in zip(per[name], per[base], strict=True))

    rows = {
        name: {
            "median_ms": statistics.median(per[name]) * 1000,
            "added_ms": added(name, "direct stream" if "stream" in name else "direct") * 1000,
        }
        for name in cases
        if not name.startswith("direct")
    }
    for name in ("direct", "direct stream"):
        rows[name] = {"median_ms": statistics.median(per[name]) * 1000, "added_ms": 0.0}
    api = rows["api/chat"]["added_ms"] - rows["v1 (instance name)"]["added_ms"]
    log(f"clients: {rounds} rounds of {per_round}")
    return {"rows": rows, "api_chat_minus_v1_ms": api}


def clients_lines(found: dict[str, Any]) -> list[str]:
    lines = [f"{'request':<24} {'median ms':>10} {'added ms':>10}"]
    for name, row in found["rows"].items():
        lines.append(f"{name:<24} {row['median_ms']:>10.3f} {row['added_ms']:>10.3f}")
    lines.append(
        f"/api/chat beside /v1/chat/completions: {found['api_chat_minus_v1_ms']:+.3f} ms "
        "(target: within 0.2 ms)"
    )
    return lines
