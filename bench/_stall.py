"""The stream-stall figure of ``bench_gateway.py`` (issue 17: nothing blocks the shared loop).

The daemon and its gateway share one event loop, so anything the daemon does on it
(checking a config before a start, probing the port, reading the GGUF header, writing
SQLite) delays every chunk of every stream in flight. This measures it from outside, as a
client sees it: a real daemon (``llama-orch daemon start`` in a temporary home, its
gateway on a free port) with two instances of the tiny model, ``a`` (started with ``up``)
and ``b`` (``gateway.on_demand``, stopped). A long streaming completion to ``a`` runs;
once it is steady, a window of ``WINDOW_S`` opens, and the largest gap between two chunks
the client receives inside it is the figure. In a *start* run a request to ``b`` is sent
as the window opens, so ``b`` is started on demand (spawned, loaded, answered) inside it;
in a *quiet* run nothing else happens; in a *by hand* run the same server as ``b`` (same
binary, model and settings) is spawned by this script itself, not through the daemon,
waited for on ``/health`` and asked the same request. The runs alternate (their order
rotates), so drift of the machine hits all alike; ``b`` is stopped with ``down`` and the
hand-started server killed between runs, outside any window.

On a machine with few cores the new server's load competes with ``a``'s generation for
the CPU: that part of the gap is no work of the daemon's. The *by hand* runs measure it,
and "added by the daemon" (start against by hand) is the share of the daemon and its
shared loop; "added" (start against quiet) is the figure the target is set on.

What is reported: median and p90 of the largest gap over the runs of each kind, and the
difference of the medians (target: at most ``TARGET_STALL_ADDED_MS``); and, alone, the
largest gap of the warm-up run, the first on-demand start of the daemon's life (its
checks import modules and read the model's header for the first time).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import statistics
import time
from pathlib import Path
from typing import Any

WINDOW_S = 0.5  # b's start (spawn, load, /health, its answer) fits inside it
STEADY_CHUNKS = 30  # chunks of a's stream before the window opens
TARGET_STALL_ADDED_MS = 2.0  # largest gap, start against quiet, at the median
# a's stream must outlast the window: the tiny model streams ~2000 tokens/s on one thread
# and its context stops at 2048 tokens (its training context), about 0.9 s
CONTEXT = 2048


class _Stream(asyncio.Protocol):
    """One streaming request; ``times`` holds when each piece of its body arrived."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.times: list[float] = []
        self.ended = asyncio.get_running_loop().create_future()
        self.steady = asyncio.get_running_loop().create_future()
        self._head = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if self._head:  # the status line and headers are not a chunk of the stream
            if not data.startswith(b"HTTP/1.1 200"):
                self._end(RuntimeError(f"stream answered {data[:200]!r}"))
                return
            self._head = False
            if b"\r\n\r\n" not in data or data.endswith(b"\r\n\r\n"):
                return
        self.times.append(now)
        if len(self.times) >= STEADY_CHUNKS and not self.steady.done():
            self.steady.set_result(None)
        if b"[DONE]" in data:
            self._end(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(None)

    def _end(self, exc: Exception | None) -> None:
        for fut in (self.steady, self.ended):
            if not fut.done():
                if exc is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(exc)


def largest_gap(times: list[float], start: float, end: float) -> float | None:
    """The largest gap between two chunks received inside ``[start, end]``, counting the
    gap that spans ``start`` (a stall that began just before the window opened)."""
    inside = [t for t in times if start <= t <= end]
    before = [t for t in times if t < start]
    if before:
        inside.insert(0, before[-1])
    if len(inside) < 2:
        return None
    return max(b - a for a, b in itertools.pairwise(inside))


def _completion(model: str, port: int, *, max_tokens: int, stream: bool) -> bytes:
    body = {
        "model": model,
        "prompt": "Once upon a time",
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": stream,
    }
    raw = json.dumps(body).encode()
    return (
        b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (port, len(raw), raw)
    )


async def _ask(port: int, model: str) -> tuple[int, float]:
    """A one-token completion: its HTTP status, and when its answer came."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(_completion(model, port, max_tokens=1, stream=False))
        status = await reader.readline()
        return int(status.split()[1]), time.perf_counter()
    finally:
        writer.close()


async def _by_hand(argv: list[str], port: int) -> tuple[int, float]:
    """b's server spawned here, not by the daemon: /health polled every 5 ms, then the
    same one-token request; its status and when it answered. Killed after the window."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        while True:
            with contextlib.suppress(OSError):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                line = await reader.readline()
                writer.close()
                if line.split()[1:2] == [b"200"]:
                    break
            if proc.returncode is not None:
                raise RuntimeError(f"the hand-started server exited ({proc.returncode})")
            await asyncio.sleep(0.005)
        return await _ask(port, "ondemand-b")
    finally:
        proc.kill()
        await proc.wait()


async def _one(
    port: int, starting: bool, hand: list[str] | None = None
) -> tuple[float | None, float | None]:
    """One run: (largest gap in s, seconds b took to answer when it was started); the
    gap is None when a's stream ended inside the window (the run is to be made again).
    With ``hand`` (b's argv and port last), b's server is started by hand instead."""
    from bench_gateway import log

    loop = asyncio.get_running_loop()
    _, stream = await loop.create_connection(_Stream, "127.0.0.1", port)
    assert stream.transport is not None
    stream.transport.write(_completion("stream-a", port, max_tokens=CONTEXT - 64, stream=True))
    try:
        await asyncio.wait_for(stream.steady, 30)
        t0 = time.perf_counter()
        ask = loop.create_task(_ask(port, "ondemand-b")) if starting else None
        if hand is not None:
            ask = loop.create_task(_by_hand(hand[:-1], int(hand[-1])))
        await asyncio.sleep(WINDOW_S)
        t1 = time.perf_counter()
        short = stream.ended.done()  # a machine fast enough to finish 2048 tokens before
        answered = None
        if ask is not None:
            status, at = await asyncio.wait_for(ask, 60)
            answered = at - t0
            if answered > WINDOW_S:
                log(f"  b answered after the window closed ({answered * 1000:.0f} ms)")
            if status != 200:
                raise RuntimeError(f"the on-demand request to b answered {status}")
    finally:
        stream.transport.abort()
    if short:
        log("  a's stream ended inside the window: the run is made again")
        return None, answered
    gap = largest_gap(stream.times, t0, t1)
    if gap is None:
        raise RuntimeError("a's stream sent nothing inside the window")
    return gap, answered


def _config(name: str, model: Path, port: int, *, on_demand: bool, ctx: int) -> dict[str, Any]:
    return {
        "name": name,
        "model": {"path": str(model), "context_size": ctx, "batch_size": 64, "threads": 1},
        "server": {"host": "127.0.0.1", "port": port, "parallel": 1},
        "healthcheck": {"start_period": 60},
        "gateway": {"on_demand": on_demand},
    }


async def stall(engine_path: str, model: Path, tmp: Path, runs: int) -> dict[str, Any]:
    """The figure: ``runs`` quiet and ``runs`` start runs, interleaved."""
    from bench_core import BenchHome, Engine
    from bench_gateway import free_port, get, log

    home = BenchHome(tmp / "stall-home", Engine("llama-server", engine_path), model)
    gport = free_port()
    (home.root / "gateway.json").write_text(json.dumps({"port": gport}))
    for name, on_demand, ctx in (("stream-a", False, CONTEXT), ("ondemand-b", True, 256)):
        path = home.root / "instances" / name / "config.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(_config(name, model, free_port(), on_demand=on_demand, ctx=ctx)))
    loop = asyncio.get_running_loop()
    quiet: list[float] = []
    start: list[float] = []
    hand: list[float] = []
    answered: list[float] = []
    try:
        await loop.run_in_executor(None, home.cli, "daemon", "start")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if get(gport, "/health", 0.5)[0] == 200:
                    break
            await asyncio.sleep(0.05)
        await loop.run_in_executor(None, home.cli, "up", "stream-a")
        # The first start of the daemon's life: its checks import the doctor and read the
        # GGUF header (tens of ms, once). Reported alone; the runs below are warm.
        first, _ = await _one(gport, starting=True)
        await loop.run_in_executor(None, home.cli, "down", "ondemand-b")
        hport = free_port()
        hand_argv = [engine_path, "-m", str(model), "--host", "127.0.0.1", "--port", str(hport)]
        hand_argv += ["-c", "256", "-b", "64", "-t", "1", "-np", "1", str(hport)]
        kinds = ["quiet", "start", "hand"]
        for k in range(runs):
            for kind in kinds[k % 3 :] + kinds[: k % 3]:
                for _attempt in range(5):
                    starting = kind == "start"
                    gap, took = await _one(gport, starting, hand_argv if kind == "hand" else None)
                    if starting and took is not None:
                        await loop.run_in_executor(None, home.cli, "down", "ondemand-b")
                    if gap is not None:
                        break
                else:
                    raise RuntimeError("a's stream keeps ending inside the window")
                {"quiet": quiet, "start": start, "hand": hand}[kind].append(gap * 1000)
                if starting and took is not None:
                    answered.append(took * 1000)
            log(
                f"  stall run {k + 1}/{runs}: quiet {quiet[-1]:.2f} ms, start {start[-1]:.2f} "
                f"ms, by hand {hand[-1]:.2f} ms"
            )
    finally:
        await loop.run_in_executor(None, home.close)
    return {
        "runs": runs,
        "window_s": WINDOW_S,
        "quiet_ms": _summary(quiet),
        "start_ms": _summary(start),
        "hand_ms": _summary(hand),
        "added_ms": statistics.median(start) - statistics.median(quiet),
        "added_by_daemon_ms": statistics.median(start) - statistics.median(hand),
        "b_answered_ms": statistics.median(answered),
        "first_start_ms": None if first is None else first * 1000,
    }


def _summary(xs: list[float]) -> dict[str, Any]:
    ordered = sorted(xs)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return {"p50": statistics.median(xs), "p90": p90, "values": [round(x, 3) for x in xs]}


def stall_lines(s: dict[str, Any]) -> list[str]:
    q, st = s["quiet_ms"], s["start_ms"]
    verdict = "met" if s["added_ms"] <= TARGET_STALL_ADDED_MS else "MISSED"
    return [
        f"largest gap between chunks of a running stream, {s['runs']} runs of "
        f"{s['window_s']:g} s (ms):",
        f"  nothing starting:              p50 {q['p50']:.2f}  p90 {q['p90']:.2f}",
        f"  another instance on demand:    p50 {st['p50']:.2f}  p90 {st['p90']:.2f} "
        f"(it answered in {s['b_answered_ms']:.0f} ms)",
        f"  the same server started by hand: p50 {s['hand_ms']['p50']:.2f}  "
        f"p90 {s['hand_ms']['p90']:.2f}",
        f"  added at the median: {s['added_ms']:+.2f} ms (target <= "
        f"{TARGET_STALL_ADDED_MS:g} ms: {verdict})",
        f"  added by the daemon (on demand against by hand): {s['added_by_daemon_ms']:+.2f} ms",
        "  the daemon's first on-demand start (one run, not in the figures): "
        + ("n/a" if s["first_start_ms"] is None else f"{s['first_start_ms']:.2f} ms"),
    ]
