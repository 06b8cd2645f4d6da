"""The gateway's HTTP/1.1 handling on raw sockets: pipelining, HTTP/1.0, 100-continue,
malformed requests, idle keep-alive connections. Only routes the gateway answers itself
are used, so no server is needed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from llama_orchestrator.gateway.app import Gateway
from llama_orchestrator.gateway.settings import GatewaySettings
from llama_orchestrator.gateway.testing import ListDirectory


def run(test: Callable[[str, int], Awaitable[None]], **settings: object) -> None:
    async def main() -> None:
        gw = Gateway(ListDirectory(), GatewaySettings(port=0, **settings))  # type: ignore[arg-type]
        await gw.start()
        host, port = gw.url.removeprefix("http://").split(":")
        try:
            await test(host, int(port))
        finally:
            await gw.close()

    asyncio.run(main())


async def read_all(reader: asyncio.StreamReader, timeout: float = 5) -> bytes:
    return await asyncio.wait_for(reader.read(), timeout)  # until the gateway closes


def test_pipelined_requests_are_answered_in_order() -> None:
    async def test(host: str, port: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(
            b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        data = await read_all(reader)
        assert data.count(b"HTTP/1.1 200 OK") == 3
        first, second, third = data.split(b"HTTP/1.1 200 OK")[1:]
        assert b'{"status": "ok"}' in first and b'"object": "list"' in second
        assert b"Connection: close" in third
        writer.close()

    run(test)


def test_http10_and_expect_100_continue() -> None:
    async def test(host: str, port: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /health HTTP/1.0\r\n\r\n")
        data = await read_all(reader)
        assert data.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in data
        writer.close()

        reader, writer = await asyncio.open_connection(host, port)
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        line = await asyncio.wait_for(reader.readline(), 5)
        assert line == b"HTTP/1.1 100 Continue\r\n"
        writer.write(b"{}")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert b"\r\n\r\nHTTP/1.1 400 Bad Request" in b"\r\n" + head  # no model in {}
        writer.close()

    run(test)


def test_a_malformed_request_is_400_and_closes() -> None:
    async def test(host: str, port: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        data = await read_all(reader)
        assert data.startswith(b"HTTP/1.1 400 Bad Request") and b"malformed" in data
        writer.close()

    run(test)


def test_idle_keepalive_connections_are_closed() -> None:
    async def test(host: str, port: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.wait_for(reader.readuntil(b'{"status": "ok"}'), 5)
        t0 = time.monotonic()
        assert await read_all(reader, 10) == b""  # closed by the gateway
        assert time.monotonic() - t0 < 5
        writer.close()

    run(test, keepalive_timeout=1.0)
