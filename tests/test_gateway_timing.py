"""The gateway's timing rules on a fake clock (issue 9): queue timeout, load timeout, the
circuit breaker, ``: loading`` keep-alive comments, dropping a queued request whose client
went. The gateway serves real sockets on the test's own event loop; time moves only when
the test advances it. Instances are scripted here, except where a request must reach a
real server.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import free_port

from llama_orchestrator.clock import FakeClock
from llama_orchestrator.gateway.app import Gateway
from llama_orchestrator.gateway.backend import Endpoint, StartResult
from llama_orchestrator.gateway.records import (
    RequestRecord,
    usage_from_json,
    usage_from_sse_tail,
)
from llama_orchestrator.gateway.settings import GatewaySettings
from llama_orchestrator.gateway.testing import ListDirectory, ServerInstance, server_argv


class Scripted:
    """An instance whose starts the test scripts: each ``ensure_started`` waits for
    ``gate`` (when set) and returns the next of ``results`` (default: ready)."""

    def __init__(
        self,
        name: str,
        *,
        state: str = "running",
        on_demand: bool = False,
        slots: int = 1,
        results: list[StartResult] | None = None,
        last_error: str | None = None,
    ) -> None:
        self.name = name
        self.aliases: tuple[str, ...] = ()
        self.on_demand = on_demand
        self.slots = slots
        self.state = state
        self.in_flight = 0
        self.last_error = last_error
        self.context_size = 256
        self.cutoff = math.inf  # never drained here
        self.results = results or []
        self.gate: asyncio.Event | None = None
        self.starts = 0

    @property
    def routable(self) -> bool:
        return self.state == "running"

    def acquire(self) -> Endpoint | None:
        if not self.routable:
            return None
        self.in_flight += 1
        return Endpoint(self.name, f"http://127.0.0.1:{free_port()}")  # nothing listens

    def release(self) -> None:
        self.in_flight -= 1
        assert self.in_flight >= 0

    async def ensure_started(self) -> StartResult:
        self.starts += 1
        self.state = "starting"
        if self.gate is not None:
            await self.gate.wait()
        result = self.results.pop(0) if self.results else StartResult(True, "ready")
        self.state = "running" if result.ok else "stopped"
        self.last_error = None if result.ok else result.message
        return result


async def until(check: Callable[[], Any], timeout: float = 10, what: str = "condition") -> Any:
    """Real time (not the fake clock): wait for sockets and tasks to catch up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if got := check():
            return got
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def run(
    test: Callable[[Gateway, FakeClock, httpx.AsyncClient], Awaitable[None]],
    instances: list[Any],
    records: list[RequestRecord] | None = None,
    **settings: Any,
) -> None:
    async def main() -> None:
        clock = FakeClock()
        hook = records.append if records is not None else None
        gw = Gateway(
            ListDirectory(instances),
            GatewaySettings(port=0, **settings),
            clock=clock,
            on_request=hook,
        )
        await gw.start()
        try:
            async with httpx.AsyncClient(base_url=gw.url, trust_env=False, timeout=30) as c:
                await test(gw, clock, c)
        finally:
            await gw.close()

    asyncio.run(main())


def post(c: httpx.AsyncClient, model: str, **body: Any) -> Coroutine[Any, Any, httpx.Response]:
    return c.post("/v1/chat/completions", json={"model": model, "messages": [], **body})


def test_queue_timeout_is_503_with_the_reason() -> None:
    busy = Scripted("busy")

    async def test(gw: Gateway, clock: FakeClock, c: httpx.AsyncClient) -> None:
        busy.acquire()  # the only slot, held
        waiting = asyncio.create_task(post(c, "busy"))
        await until(lambda: gw.router.queue_depths() == {"busy": 1}, what="queued")
        await clock.advance(29)
        assert not waiting.done()
        await clock.advance(1.5)
        r = await asyncio.wait_for(waiting, 5)
        assert r.status_code == 503 and r.headers["retry-after"] == "5"
        err = r.json()["error"]
        assert err["code"] == "queue_timeout" and "within 30 s (queue.timeout)" in err["message"]
        assert err["message"].endswith("; 1 request waiting")  # not "1 requests"
        assert gw.router.queue_depths() == {} and busy.in_flight == 1
        busy.release()

    run(test, [busy], queue_timeout=30)


def test_a_queued_request_is_dropped_when_its_client_goes() -> None:
    busy = Scripted("busy")
    records: list[RequestRecord] = []

    async def test(gw: Gateway, clock: FakeClock, c: httpx.AsyncClient) -> None:
        busy.acquire()
        host, port = gw.url.removeprefix("http://").split(":")
        _, writer = await asyncio.open_connection(host, int(port))
        body = json.dumps({"model": "busy"}).encode()
        writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
        await until(lambda: gw.router.queue_depths() == {"busy": 1}, what="queued")
        writer.close()
        await until(lambda: gw.router.queue_depths() == {}, what="the queue to drop it")
        busy.release()
        assert busy.in_flight == 0  # no lease was handed to the gone request
        gone = [(r.status, r.error) for r in records]
        assert gone == [(499, "client disconnected while waiting")]

    run(test, [busy], records)


def test_fatal_and_stopped_instances_answer_503_at_once() -> None:
    fatal = Scripted("fatal", state="fatal", last_error="model file not found: /m.gguf")
    off = Scripted("off", state="stopped")

    async def test(gw: Gateway, clock: FakeClock, c: httpx.AsyncClient) -> None:
        r = await post(c, "fatal")
        assert r.status_code == 503
        assert "is fatal: model file not found: /m.gguf" in r.json()["error"]["message"]
        r = await post(c, "off")
        assert r.status_code == 503
        assert (
            "on_demand is off (start it with `llama-orch up off`)" in r.json()["error"]["message"]
        )
        assert fatal.starts == off.starts == 0

    run(test, [fatal, off])


def test_three_failed_starts_open_the_circuit_breaker() -> None:
    flaky = Scripted("flaky", state="stopped", on_demand=True,
                     results=[StartResult(False, "out of memory")] * 4)  # fmt: skip

    async def test(gw: Gateway, clock: FakeClock, c: httpx.AsyncClient) -> None:
        for n in range(1, 4):
            r = await post(c, "flaky")
            assert r.status_code == 503 and flaky.starts == n
            assert "could not start: out of memory" in r.json()["error"]["message"]
            if n < 3:
                await clock.advance(10)
        r = await post(c, "flaky")  # no fourth attempt
        err = r.json()["error"]
        assert r.status_code == 503 and err["code"] == "circuit_open" and flaky.starts == 3
        assert "failed to start 3 times within 60 s; not trying again for 60 s" in err["message"]
        assert "out of memory" in err["message"] and r.headers["retry-after"] == "60"
        await clock.advance(61)
        r = await post(c, "flaky")  # the cool-down is over: one attempt, which fails
        assert flaky.starts == 4 and "could not start" in r.json()["error"]["message"]
        r = await post(c, "flaky")  # and opens the breaker again at once
        assert r.json()["error"]["code"] == "circuit_open" and flaky.starts == 4

    run(test, [flaky])


def test_a_start_that_never_finishes_is_a_load_timeout() -> None:
    slow = Scripted("slow", state="stopped", on_demand=True)
    slow.gate = None

    async def test(gw: Gateway, clock: FakeClock, c: httpx.AsyncClient) -> None:
        slow.gate = asyncio.Event()  # never set
        waiting = asyncio.create_task(post(c, "slow"))
        await until(lambda: slow.starts == 1, what="a start")
        await clock.advance(20.5)
        r = await asyncio.wait_for(waiting, 5)
        err = r.json()["error"]
        assert r.status_code == 503 and err["code"] == "load_timeout"
        assert "did not become ready within 20 s (load_timeout); slow: starting" in err["message"]

    run(test, [slow], load_timeout=20)


def test_a_waiting_stream_gets_loading_comments_on_a_cadence() -> None:
    slow = Scripted("slow", state="stopped", on_demand=True,
                    results=[StartResult(False, "no memory for the KV cache")])  # fmt: skip

    async def test(gw: Gateway, clock: FakeClock, c: httpx.AsyncClient) -> None:
        slow.gate = asyncio.Event()
        got: list[bytes] = []
        meta: dict[str, Any] = {}

        async def read() -> None:
            body = {"model": "slow", "messages": [], "stream": True}
            async with c.stream("POST", "/v1/chat/completions", json=body) as r:
                meta.update(status=r.status_code, headers=r.headers)
                async for piece in r.aiter_raw():
                    got.append(piece)

        reader = asyncio.create_task(read())

        def comments() -> int:
            return b"".join(got).count(b": loading\n\n")

        await until(lambda: comments() == 1, what="the first comment, at once")
        assert meta["status"] == 200 and meta["headers"]["x-llama-orch-instance"] == "slow"
        assert meta["headers"]["cache-control"] == "no-cache"
        await clock.advance(14)
        await asyncio.sleep(0.05)
        assert comments() == 1
        await clock.advance(1.5)
        await until(lambda: comments() == 2, what="a comment after 15 s")
        await clock.advance(15)
        await until(lambda: comments() == 3, what="and again")
        slow.gate.set()  # the start fails: an error event ends the stream
        await asyncio.wait_for(reader, 5)
        event = b"".join(got).split(b"data: ")[-1]
        err = json.loads(event)["error"]
        assert "no memory for the KV cache" in err["message"]

    run(test, [slow])


def test_a_stream_that_waited_for_a_start_relays_the_real_answer(
    llama_server_bin: Path, tiny_model: Path
) -> None:
    port = free_port()
    real = ServerInstance("real", server_argv(llama_server_bin, tiny_model, port), port,
                          on_demand=True)  # fmt: skip
    gate = asyncio.Event()
    plain_start = real.ensure_started

    async def gated_start() -> StartResult:
        await gate.wait()
        return await plain_start()

    real.ensure_started = gated_start  # type: ignore[method-assign]

    async def test(gw: Gateway, clock: FakeClock, c: httpx.AsyncClient) -> None:
        got: list[bytes] = []

        async def read() -> None:
            body = {"model": "real", "messages": [{"role": "user", "content": "hi"}],
                    "max_tokens": 3, "stream": True}  # fmt: skip
            async with c.stream("POST", "/v1/chat/completions", json=body) as r:
                async for piece in r.aiter_raw():
                    got.append(piece)

        reader = asyncio.create_task(read())
        await until(lambda: b": loading" in b"".join(got), what="a comment")
        gate.set()
        await asyncio.wait_for(reader, 60)
        text = b"".join(got).decode()
        assert text.startswith(": loading\n\n") and text.rstrip().endswith("data: [DONE]")
        assert '"chat.completion.chunk"' in text and real.starts == 1 and real.in_flight == 0

    try:
        run(test, [real])
    finally:
        real.stop()


def test_non_loopback_without_keys_is_refused() -> None:
    async def main() -> None:
        gw = Gateway(ListDirectory(), GatewaySettings(host="0.0.0.0", port=0))
        with pytest.raises(ValueError, match="without API keys"):
            await gw.start()
        assert gw.error and "api_keys" in gw.error and not gw.listening

    asyncio.run(main())


def test_status_says_what_is_served() -> None:
    a = Scripted("a", slots=2)
    a.aliases = ("x",)

    async def test(gw: Gateway, clock: FakeClock, c: httpx.AsyncClient) -> None:
        a.acquire()
        st = gw.status()
        assert st["listening"] and st["url"] == gw.url and st["keys"] == 1
        assert st["routes"] == {"a": ["a"], "x": ["a"]} and st["in_flight"] == {"a": 1}
        assert (await c.get("/health")).json() == {"status": "ok"}
        a.release()

    run(test, [a], api_keys=("k",))


def test_usage_is_read_from_answers_and_stream_tails() -> None:
    body = (b'{"choices":[{"message":{"content":"\\"prompt_tokens\\": 99"}}],"usage":'
            b'{"completion_tokens":3,"prompt_tokens":56},"timings":{"prompt_n":56,'
            b'"predicted_n":3,"predicted_per_second":6535.9}}')  # fmt: skip
    u = usage_from_json(body)
    assert (u.prompt_tokens, u.completion_tokens, u.tokens_per_s) == (56, 3, 6535.9)
    anthropic = usage_from_json(b'{"usage": {"input_tokens": 4, "output_tokens": 7}}')
    assert (anthropic.prompt_tokens, anthropic.completion_tokens) == (4, 7)
    tail = (b'data: {"choices":[]}\n\ndata: {"choices":[],"timings":{"prompt_n":1,'
            b'"predicted_n":5,"predicted_per_second":100.5}}\n\ndata: [DONE]\n\n')  # fmt: skip
    assert usage_from_sse_tail(tail)[1:] == (5, 100.5)
    assert usage_from_json(b"{}").prompt_tokens is None


def test_a_pool_with_no_replica_running_starts_one() -> None:
    a = Scripted("a", state="stopped", on_demand=True, results=[StartResult(False, "no")])
    b = Scripted("b", state="stopped", on_demand=True)
    a.aliases = b.aliases = ("pool",)

    async def test(gw: Gateway, clock: FakeClock, c: httpx.AsyncClient) -> None:
        a.gate = asyncio.Event()
        asks = [asyncio.create_task(post(c, "pool")) for _ in range(5)]
        await until(lambda: gw.router.queue_depths() == {"pool": 5}, what="five waiting")
        # The start runs as a task of its own: wait for it to have begun rather than assume
        # it ran before the last request queued (it need not, on a loaded machine: issue 17).
        await until(lambda: a.starts == 1, what="the first replica's start to begin")
        # the starts in flight are recorded when launched: only a's, once, for all five
        assert gw.router.starting() == ["a"] and b.starts == 0
        a.gate.set()  # that start fails: the other replica is started for them
        await until(lambda: b.starts == 1, what="the second replica to start")
        for r in await asyncio.gather(*asks):
            assert r.status_code == 502  # scripted instances have no server at their address
        assert a.in_flight == b.in_flight == 0

    run(test, [a, b])
