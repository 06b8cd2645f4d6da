"""The gateway's limits on what a client sends (issue 19), on raw sockets: the URL (414),
the headers (431, before they are held whole), the key checked at the end of the headers
(a refused body is never read), the ``Host`` of a request served without a key (421), a
slow upload (never cut while bytes come; 408 once they stop) and bodies that are not the
JSON an API client means (400 in the API's words). Only routes the gateway answers itself
are used, so no server is needed."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable

import pytest

from llama_orchestrator.clock import FakeClock
from llama_orchestrator.gateway.app import Gateway
from llama_orchestrator.gateway.server import (
    MAX_HEADER_BYTES,
    MAX_URL_BYTES,
    RECEIVE_TIMEOUT_S,
)
from llama_orchestrator.gateway.settings import GatewaySettings
from llama_orchestrator.gateway.testing import ListDirectory

KEY = "sk-limits-key"
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def run(test: Callable[[Gateway, int], Awaitable[None]], **settings: object) -> None:
    async def main() -> None:
        clock = FakeClock()
        gw = Gateway(ListDirectory(), GatewaySettings(port=0, **settings), clock=clock)  # type: ignore[arg-type]
        await gw.start()
        try:
            await asyncio.wait_for(test(gw, int(gw.url.rsplit(":", 1)[1])), 30)
        finally:
            await gw.close()

    asyncio.run(main())


async def read_response(
    reader: asyncio.StreamReader, timeout: float = 5
) -> tuple[int, dict[str, str], bytes]:
    """One response (status, headers, body) by its Content-Length."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    lines = head.decode("latin-1").split("\r\n")
    headers = {
        k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)
    }
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 5)
    return int(lines[0].split()[1]), headers, body


def message(body: bytes) -> str:
    return str(json.loads(body)["error"]["message"])


def test_a_huge_header_is_refused_431_before_it_is_read_whole() -> None:
    """A 512 MiB header without a key stalled the daemon's loop for 15 s: it is cut off
    after some KiB, the gateway stays responsive, and a head under the limit passes."""

    async def test(gw: Gateway, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Big: ")
        answer = asyncio.ensure_future(read_response(reader, 60))
        sent = 0
        while not answer.done() and sent < 256:  # up to 256 MiB, until it answers
            writer.write(b"a" * (1024 * 1024))
            try:
                await writer.drain()
            except ConnectionError:
                break
            sent += 1
        status, headers, body = await answer
        assert sent < 64, f"{sent} MiB of one header were read"
        assert status == 431 and headers["connection"] == "close"
        assert f"limit of {MAX_HEADER_BYTES // 1024} KiB" in message(body)
        writer.close()

        # many small headers add up to the same limit
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        many = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(800))
        writer.write(b"GET /health HTTP/1.1\r\nHost: localhost\r\n" + many + b"\r\n")
        assert (await read_response(reader))[0] == 431
        writer.close()

        # under the limit: served
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        big = b"X-Big: " + b"a" * (MAX_HEADER_BYTES - 200) + b"\r\n"
        writer.write(b"GET /health HTTP/1.1\r\nHost: localhost\r\n" + big + b"\r\n")
        assert (await read_response(reader))[0] == 200
        writer.close()

    run(test)


def test_a_url_over_64_kib_gets_414_in_words() -> None:
    async def test(gw: Gateway, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /v1/models?" + b"a" * 60000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert (await read_response(reader))[0] == 200
        writer.write(b"GET /v1/models?" + b"a" * 70000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n")
        status, _, body = await read_response(reader)
        assert status == 414
        assert f"longer than the gateway's limit of {MAX_URL_BYTES // 1024} KiB" in message(body)
        assert "callback" not in message(body)
        writer.close()

    run(test)


def test_the_key_is_checked_at_the_end_of_the_headers() -> None:
    """A request without a key is answered 401 before its body is sent; the body that
    follows is discarded, and the connection goes on."""

    async def test(gw: Gateway, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        size = 512 * 1024
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % size
        )
        status, _, body = await read_response(reader)  # no byte of the body sent yet
        assert status == 401 and "invalid_api_key" in body.decode()
        writer.write(b"x" * size)  # discarded, not held
        writer.write(
            b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer %s\r\n\r\n"
            % KEY.encode()
        )
        status, _, body = await read_response(reader)
        assert status == 200 and json.loads(body)["object"] == "list"
        writer.close()

        # chunked, past max_body_bytes: closed, never a 413 after the 401
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        assert (await read_response(reader))[0] == 401
        piece = b"x" * 65536
        with contextlib.suppress(ConnectionError):
            for _ in range(64):  # 4 MiB, over the 1 MiB limit
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()

    run(test, api_keys=(KEY,), max_body_bytes=1024 * 1024)


def test_a_foreign_host_gets_421_when_no_key_is_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: a page of evil.example resolved to 127.0.0.1 could read /v1/models,
    /metrics and /upstream/NAME/props. The rule is the control API's."""
    monkeypatch.setenv("LLAMA_ORCH_ALLOWED_HOSTS", "box.lan")

    async def test(gw: Gateway, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for path in (b"/v1/models", b"/metrics", b"/upstream/x/props"):
            writer.write(b"GET %s HTTP/1.1\r\nHost: evil.example:%d\r\n\r\n" % (path, port))
            status, _, body = await read_response(reader)
            assert status == 421, path
            assert "'evil.example:" in message(body)
            assert "LLAMA_ORCH_ALLOWED_HOSTS" in message(body)
        for host in (b"127.0.0.1:%d" % port, b"localhost", b"[::1]:80", b"box.lan:8080"):
            writer.write(b"GET /v1/models HTTP/1.1\r\nHost: %s\r\n\r\n" % host)
            assert (await read_response(reader))[0] == 200, host
        writer.write(b"GET /health HTTP/1.1\r\nHost: evil.example\r\n\r\n")
        assert (await read_response(reader))[0] == 200  # says nothing
        writer.close()

    run(test)


def test_with_keys_the_key_is_the_guard_whatever_the_host() -> None:
    async def test(gw: Gateway, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        auth = b"Authorization: Bearer %s\r\n" % KEY.encode()
        writer.write(b"GET /v1/models HTTP/1.1\r\nHost: box.example\r\n" + auth + b"\r\n")
        assert (await read_response(reader))[0] == 200
        writer.write(b"GET /v1/models HTTP/1.1\r\nHost: box.example\r\n\r\n")
        assert (await read_response(reader))[0] == 401
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: box.example\r\n\r\n")  # a LAN scraper
        assert (await read_response(reader))[0] == 200
        writer.close()

    run(test, api_keys=(KEY,), host="127.0.0.1", metrics_public=True)


def test_the_413_names_the_setting() -> None:
    async def test(gw: Gateway, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n"
            % (2 * 1024 * 1024)
        )
        status, _, body = await read_response(reader)
        assert status == 413
        assert "max_body_mb" in message(body) and "max_body_bytes" not in message(body)
        assert "1 MiB" in message(body)
        writer.close()

    run(test, max_body_bytes=1024 * 1024)


async def post(streams: Streams, body: bytes) -> tuple[int, str]:
    reader, writer = streams
    writer.write(
        b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n%s"
        % (len(body), body)
    )
    status, _, answer = await read_response(reader)
    return status, message(answer)


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b'{"model": "m", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
        (b'{"a":' * 5000 + b"1" + b"}" * 5000, "nested too deeply"),
        (b'{"model": "m", "n": ' + b"7" * 5000 + b"}", "a number in it has more than 4300 digits"),
        (b'{"model": 5}', "'model' is a number (5), not a string"),
        (b'{"model": null}', "'model' is null, not a string"),
        (b'{"model": ["tiny"]}', "'model' is an array, not a string"),
        (b'{"model": {}}', "'model' is an object, not a string"),
        (b'{"model": true}', "'model' is a boolean (true), not a string"),
        (b'{"model": ""}', "'model' is an empty string"),
        (b'{"prompt": "x"}', "has no 'model'"),
    ],
)
def test_bad_bodies_get_400_in_the_apis_words(body: bytes, said: str) -> None:
    async def test(gw: Gateway, port: int) -> None:
        streams = await asyncio.open_connection("127.0.0.1", port)
        status, text = await post(streams, body)
        assert status == 400 and said in text, text
        assert "sys.set_int_max_str_digits" not in text
        streams[1].close()

    run(test)


def test_a_slow_upload_is_never_cut_while_its_bytes_come() -> None:
    """The keep-alive sweeper cut an upload at one byte every 0.5 s after ~80 s: a request
    still arriving is not idle. One whose bytes stop gets 408 after RECEIVE_TIMEOUT_S."""

    async def test(gw: Gateway, port: int) -> None:
        clock = gw.now.__self__  # type: ignore[attr-defined]
        assert isinstance(clock, FakeClock)

        async def sweep_after(seconds: float) -> None:
            clock.block(seconds)
            gw._sweep()  # what the sweeper does every few seconds

        body = b'{"model": "nope", "prompt": "' + b"x" * 40 + b'"}'
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n"
            % len(body)
        )
        for i in range(len(body)):  # 10 s per byte: far past keepalive and the 408 timeout
            writer.write(body[i : i + 1])
            await writer.drain()
            await asyncio.sleep(0.01)
            await sweep_after(10.0)
        status, _, answer = await read_response(reader)
        assert status == 404 and "model 'nope' not found" in message(answer)

        # stopped: 408, once no byte came for the timeout, and closed
        writer.write(
            b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: 50\r\n\r\n{"
        )
        await writer.drain()
        await asyncio.sleep(0.05)
        await sweep_after(0)  # the sweep that sees it arrive
        await sweep_after(RECEIVE_TIMEOUT_S - 1)
        assert not reader.at_eof()
        await sweep_after(2)
        status, headers, answer = await read_response(reader)
        assert status == 408 and headers["connection"] == "close"
        assert f"no byte of it came for {RECEIVE_TIMEOUT_S:g} s" in message(answer)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()

    run(test)


def test_a_refused_request_whose_body_never_comes_is_closed_without_a_second_answer() -> None:
    async def test(gw: Gateway, port: int) -> None:
        clock = gw.now.__self__  # type: ignore[attr-defined]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: 99\r\n\r\n"
        )
        assert (await read_response(reader))[0] == 401
        for seconds in (0, RECEIVE_TIMEOUT_S + 1):
            clock.block(seconds)
            gw._sweep()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, no 408 after the 401
        writer.close()

    run(test, api_keys=(KEY,))


def test_deep_nesting_on_the_ollama_and_router_routes_is_a_400_too() -> None:
    nested = b'{"model": "m", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"

    async def test(gw: Gateway, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for path in (b"/api/chat", b"/api/generate", b"/models/load"):
            writer.write(
                b"POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n%s"
                % (path, len(nested), nested)
            )
            status, _, body = await read_response(reader)
            assert status == 400, (path, body)
            assert b"nested too deeply" in body, (path, body)
        writer.close()

    run(test)
