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
            b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n"
            b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\n\r\n"
            b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
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
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n"
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
        writer.write(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await asyncio.wait_for(reader.readuntil(b'{"status": "ok"}'), 5)
        t0 = time.monotonic()
        assert await read_all(reader, 10) == b""  # closed by the gateway
        assert time.monotonic() - t0 < 5
        writer.close()

    run(test, keepalive_timeout=1.0)


def test_a_reader_that_stops_pauses_the_instance_instead_of_buffering() -> None:
    """48 MiB from an upstream: while the client reads nothing, the gateway stops reading
    too, so what has left the upstream is what the kernel's socket buffers hold (at most
    about 20 MiB on Linux), not the whole answer; then the client gets every byte."""
    from llama_orchestrator.gateway.static import StaticInstance

    size = 48 << 20
    sent: list[asyncio.Transport] = []

    class Big(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            sent.append(transport)  # type: ignore[arg-type]

        def data_received(self, data: bytes) -> None:
            if b"\r\n\r\n" in data:
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)  # type: ignore[attr-defined]
                self.transport.write(b"x" * size)  # type: ignore[attr-defined]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        up = await loop.create_server(Big, "127.0.0.1", 0)
        up_port = up.sockets[0].getsockname()[1]
        inst = StaticInstance("big", f"http://127.0.0.1:{up_port}")
        gw = Gateway(ListDirectory([inst]), GatewaySettings(port=0))
        await gw.start()
        host, port = gw.url.removeprefix("http://").split(":")
        try:
            reader, writer = await asyncio.open_connection(host, int(port), limit=1 << 16)
            writer.write(b"GET /upstream/big/file HTTP/1.1\r\nHost: localhost\r\n\r\n")
            unsent = -1
            while True:  # until the upstream's buffer stops draining
                await asyncio.sleep(0.2)
                now = sent[0].get_write_buffer_size() if sent else -1
                if now == unsent:
                    break
                unsent = now
            assert unsent > 24 << 20, unsent  # the gateway did not take it all in
            head = await reader.readuntil(b"\r\n\r\n")
            assert b"Content-Length: %d" % size in head
            body = await asyncio.wait_for(reader.readexactly(size), 30)
            assert body == b"x" * size and inst.in_flight == 0
            writer.close()
        finally:
            await gw.close()
            up.close()

    asyncio.run(main())


def test_pages_of_other_sites_are_refused_without_keys_and_cookies_never_forwarded() -> None:
    """A browser page of another site (its Origin) cannot use a gateway without keys;
    pages on this machine can, and so can any client holding a key when keys are set."""
    from llama_orchestrator.gateway.forward import DROP_REQUEST, request_bytes
    from llama_orchestrator.gateway.server import Request
    from llama_orchestrator.gateway.upstream import Target

    async def ask(host: str, port: int, headers: bytes) -> bytes:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(
            b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\n"
            + headers
            + b"Connection: close\r\n\r\n"
        )
        data = await read_all(reader)
        writer.close()
        return data

    async def keyless(host: str, port: int) -> None:
        for origin in (b"https://evil.example", b"null", b"http://192.168.1.9:3000"):
            data = await ask(host, port, b"Origin: " + origin + b"\r\n")
            assert data.startswith(b"HTTP/1.1 403") and b"forbidden_origin" in data, data
            assert b"api_keys" in data  # the fix is named
        for origin in (b"http://localhost:3000", b"http://127.0.0.1:5173", b"http://[::1]:80"):
            data = await ask(host, port, b"Origin: " + origin + b"\r\n")
            assert data.startswith(b"HTTP/1.1 200"), data
        assert (await ask(host, port, b"")).startswith(b"HTTP/1.1 200")  # no browser at all

    run(keyless)

    async def keyed(host: str, port: int) -> None:
        data = await ask(
            host, port, b"Origin: https://app.example\r\nAuthorization: Bearer k-1\r\n"
        )
        assert data.startswith(b"HTTP/1.1 200"), data  # a page given a key may call it

    run(keyed, api_keys=("k-1",))

    headers = [(b"Cookie", b"llama_orch_session=s3cret"), (b"X-Other", b"1")]
    req = Request(b"POST", b"/v1/completions", headers, b"{}", True, True, 0.0)
    target = Target("http://127.0.0.1:9", 1.0)
    sent = request_bytes(req, target, b"/v1/completions", DROP_REQUEST)
    assert b"s3cret" not in sent and b"X-Other: 1" in sent


def test_a_request_that_comes_back_to_its_gateway_is_a_loop() -> None:
    """Each gateway marks what it forwards (and the daemon's health checks): a request
    carrying its own mark came back to it, and is answered 508 at once."""

    async def main() -> None:
        gw = Gateway(ListDirectory(), GatewaySettings(port=0))
        await gw.start()
        host, port = gw.url.removeprefix("http://").split(":")
        try:
            for path, via in ((b"/health", gw.hop), (b"/v1/models", b"other, " + gw.hop)):
                reader, writer = await asyncio.open_connection(host, int(port))
                writer.write(
                    b"GET " + path + b" HTTP/1.1\r\nHost: localhost\r\nX-Llama-Orch-Via: " + via
                    + b"\r\nConnection: close\r\n\r\n"
                )  # fmt: skip
                data = await read_all(reader)
                writer.close()
                assert data.startswith(b"HTTP/1.1 508") and b"loop_detected" in data, data
                assert b"remote.url points at this gateway" in data
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(
                b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Llama-Orch-Via: abc\r\n\r\n"
            )
            assert (await reader.readuntil(b"\r\n")).startswith(b"HTTP/1.1 200")  # not ours
            writer.close()
        finally:
            await gw.close()

    asyncio.run(main())
