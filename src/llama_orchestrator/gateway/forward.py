"""The proxy path: one leased request relayed to its instance (issue 9).

The request is rewritten once into the bytes an instance gets (hop-by-hop headers and,
with gateway keys, the client's key dropped; ``Host`` and ``Content-Length`` set) and
sent over a pooled keep-alive connection; ``proxy.Relay`` writes the answer to the client
as it arrives. Everything here is driven by the connections' callbacks: a request with a
free slot and an idle connection goes out and comes back without a task or an await.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from llama_orchestrator.gateway.errors import GatewayError, error_headers
from llama_orchestrator.gateway.proxy import (
    CAPTURE_JSON,
    CAPTURE_TAIL,
    HOP_BY_HOP,
    Relay,
    sse_fail,
)
from llama_orchestrator.gateway.records import (
    NO_USAGE,
    Usage,
    usage_from_json,
    usage_from_sse_tail,
)
from llama_orchestrator.gateway.rename import Rename
from llama_orchestrator.gateway.router import Lease, Router
from llama_orchestrator.gateway.server import HttpConnection, Request
from llama_orchestrator.gateway.upstream import Target, UpstreamConnection, UpstreamError, Upstreams

log = logging.getLogger(__name__)

# Request headers never forwarded: hop-by-hop, rewritten by the gateway, or the browser's
# cookies (a page on 127.0.0.1 sends the control API's session cookie to every port).
DROP_REQUEST = HOP_BY_HOP | {
    b"host",
    b"proxy-authorization",
    b"content-length",
    b"expect",
    b"cookie",
    b"x-llama-orch-via",  # sent again, with this gateway's own mark added
}
# The gateways a request went through: one that comes back to a gateway it left is a loop
# (a remote instance's url pointing at this gateway, or at one that forwards back here).
VIA = b"x-llama-orch-via"
# With gateway keys set, the client's key is the gateway's, not the instance's.
DROP_KEYS = DROP_REQUEST | {b"authorization", b"x-api-key"}
BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})


def request_bytes(
    req: Request,
    target: Target,
    url: bytes,
    drop: frozenset[bytes],
    api_key: str | None = None,
    hop: bytes = b"",
) -> bytes:
    """The bytes an instance gets. With ``api_key`` (a remote instance's, issue 13) the
    client's own key headers are dropped whatever they hold and the instance's is sent.
    ``hop``, this gateway's mark, is added to the request's ``X-Llama-Orch-Via``."""
    parts = [req.method, b" ", url, b" HTTP/1.1\r\nHost: ", target.host_header, b"\r\n"]
    if hop:
        prior = req.header(VIA)
        parts += (b"X-Llama-Orch-Via: ", prior + b", " + hop if prior else hop, b"\r\n")
    if api_key is not None:
        drop = drop | DROP_KEYS
        parts += (b"Authorization: Bearer ", api_key.encode("ascii"), b"\r\n")
    for name, value in req.headers:
        if name.lower() not in drop:
            parts += (name, b": ", value, b"\r\n")
    body = req.body
    if body or req.method in BODY_METHODS:
        parts.append(b"Content-Length: %d\r\n\r\n" % len(body))
        parts.append(body)
    else:
        parts.append(b"\r\n")
    return b"".join(parts)


class ForwardHost(Protocol):
    """What a ``Forward`` uses of the gateway (``app.Gateway``)."""

    router: Router
    upstreams: Upstreams
    drop: frozenset[bytes]  # DROP_REQUEST, or DROP_KEYS with gateway keys set
    hop: bytes  # this gateway's mark in X-Llama-Orch-Via
    recording: bool  # request records are wanted: capture usage from the answers
    now: Callable[[], float]

    def record(
        self,
        req: Request,
        model: str | None,
        instance: str | None,
        status: int,
        ttfb: float | None,
        stream: bool,
        usage: Usage,
        error: str | None,
    ) -> None: ...


class Forward:
    """One request relayed to its leased instance, driven by the connections' callbacks.

    ``begin`` sends it on an idle pooled connection (or opens one in a task); the relay's
    end, the client's disconnect or a failure each lead to ``_finish``, which runs once:
    it releases the lease (in a ``finally``), records the request and hands the client
    connection back. A reused connection that closes before answering is retried once on
    a fresh one (llama-server may close an idle keep-alive connection at any moment).
    """

    __slots__ = (
        "_attempt",
        "_committed",
        "_conn",
        "_data",
        "_finished",
        "_gw",
        "_lease",
        "_lost",
        "_model",
        "_relay",
        "_req",
        "_reused",
        "_stream",
        "_target",
        "_task",
        "_tried",
        "_up",
        "_url",
    )

    def __init__(
        self,
        gw: ForwardHost,
        req: Request,
        conn: HttpConnection,
        lease: Lease,
        model: str | None,
        url: bytes,
        stream: bool,
        committed: bool,
    ) -> None:
        self._gw = gw
        self._req = req
        self._conn = conn
        self._lease = lease
        self._model = model
        self._url = url
        self._stream = stream
        self._committed = committed
        self._finished = False
        self._attempt = 0
        self._up: UpstreamConnection | None = None
        self._relay: Relay | None = None
        self._task: asyncio.Task[None] | None = None
        self._reused = False
        self._lost: str | None = None  # why a reused connection closed under the request
        self._tried: set[str] = set()

    def begin(self) -> None:
        self._conn.active = self
        try:
            gw = self._gw
            self._target = gw.upstreams.target(self._lease.endpoint.base_url)
            key = self._lease.endpoint.api_key
            self._data = request_bytes(self._req, self._target, self._url, gw.drop, key, gw.hop)
            up = self._target.take()
            if up is None:
                self._connect()
            else:
                self._send(up, True)
            if self._stream:
                # llama-server closes a connection after a stream: have the next one ready.
                self._target.prewarm()
        except Exception as e:
            log.exception("gateway forward failed")
            self._fail(f"gateway error: {e}")

    def _connect(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._open())

    async def _open(self) -> None:
        try:
            up = await self._target.connect()
        except UpstreamError as e:
            if self._attempt:
                # The retry after a reused connection closed under the request: the
                # instance may have died of this very request (a prompt that crashes
                # llama-server). It is not replayed elsewhere, where it could do the same.
                name = self._lease.instance.name
                self._fail(
                    f"instance {name!r} closed the connection while it had the request "
                    f"({self._lost}), and now refuses connections ({e}): it died under the "
                    "request, which is not sent to another instance"
                )
            elif not self._reroute():  # nothing was sent: another replica may take it
                self._fail(str(e))
            return
        except asyncio.CancelledError:
            self._finish(499, "client disconnected")
            raise
        if self._finished:
            up.close()
            return
        self._send(up, False)

    def _reroute(self) -> bool:
        """Nothing was sent and the instance cannot be reached (it died and the daemon has
        not noticed yet): another replica of the pool takes the request, at once when one
        has a free slot, else through the queue (it is not counted against this one)."""
        if self._model is None or self._finished:
            return False
        self._tried.add(self._lease.instance.name)
        router = self._gw.router
        others = router.others(self._model, self._tried)
        if not others:
            return False
        other = router.try_acquire(self._model, others)
        self._lease.release()
        if other is not None:
            self._begin_again(other)
        else:
            self._task = asyncio.get_running_loop().create_task(self._wait_for_other())
        return True

    async def _wait_for_other(self) -> None:
        assert self._model is not None
        try:
            lease = await self._gw.router.acquire(self._model, exclude=frozenset(self._tried))
        except GatewayError as e:
            self._answer_error(e, b"")
            self._finish(e.status, e.message)
            return
        except asyncio.CancelledError:
            self._finish(499, "client disconnected")
            raise
        if self._finished:
            lease.release()
            return
        self._begin_again(lease)

    def _begin_again(self, lease: Lease) -> None:
        """Start over on another replica's lease (nothing was sent to the first)."""
        self._lease = lease
        self._attempt = 0
        self.begin()

    def _send(self, up: UpstreamConnection, reused: bool) -> None:
        gw = self._gw
        self._up = up
        self._reused = reused
        self._relay = relay = Relay(
            self._conn,
            self._req,
            self._lease.instance.name,
            committed=self._committed,
            capture=gw.recording,
            now=gw.now,
            on_done=self._relay_done,
            rename=Rename.of(self._lease.instance, self._model),
            model=self._model,
        )
        conn = self._conn
        conn.flow = up
        up.send(self._data, relay)
        if conn.write_paused:
            up.pause_reading()

    def _relay_done(self) -> None:
        if self._finished:
            return
        relay, up = self._relay, self._up
        assert relay is not None and up is not None
        self._conn.flow = None
        try:
            if relay.lost is None:
                if relay.upstream_reusable:
                    self._target.put(up, max(1, self._lease.instance.slots))
                else:
                    up.close()
                    self._target.prewarm()
                usage = NO_USAGE
                kind, body = relay.captured()
                if kind == CAPTURE_JSON:
                    usage = usage_from_json(body)
                elif kind == CAPTURE_TAIL:
                    usage = usage_from_sse_tail(body)
                if relay.incomplete is not None:
                    error = f"instance {self._lease.instance.name!r}: {relay.incomplete}"
                    self._finish(502, error, relay.head_at, usage)
                    return
                self._finish(relay.status, None, relay.head_at, usage)
                return
            up.abort()
            name = self._lease.instance.name
            if self._reused and not relay.got_bytes and self._attempt == 0:
                # A stale keep-alive connection: once more on a fresh one, to the same
                # instance only (_open).
                self._attempt = 1
                self._lost = relay.lost
                self._connect()
                return
            if relay.head_at is not None:
                # Mid-response: a stream ends with an error event in its own format; any
                # other answer is cut, so that the client sees a broken message, not a
                # whole one. Either way it counts as 502 in the records and /metrics.
                error = f"instance {name!r} broke the connection mid-response: {relay.lost}"
                if not relay.cut(f"the answer was cut off: {error}"):
                    self._conn.abort()
                self._finish(502, error, relay.head_at)
                return
            self._fail(f"instance {name!r} closed the connection without answering: {relay.lost}")
        except Exception as e:
            log.exception("gateway relay failed")
            self._conn.abort()
            self._finish(502, f"gateway error: {e}")

    def client_lost(self) -> None:
        """The client went: close the instance's connection at once (llama-server then
        stops generating and frees the slot) and end the request."""
        if self._finished:
            return
        if self._up is not None:
            self._up.abort()
        if self._task is not None:
            self._task.cancel()
        # 499: nginx's code for it; the time to the first byte stays when bytes flowed
        ttfb = self._relay.head_at if self._relay is not None else None
        self._finish(499, "client disconnected", ttfb)

    def _fail(self, error: str) -> None:
        """Answer 502: the instance could not be reached or broke off before answering."""
        err = GatewayError(502, "upstream_error", error, instance=self._lease.instance.name)
        self._answer_error(err, error_headers(err))
        self._finish(502, error)

    def _answer_error(self, err: GatewayError, extra_headers: bytes) -> None:
        """An error answer, or an error event inside the stream the client already has."""
        if self._committed:
            self._conn.write(sse_fail(err.body(), self._req.path))
        else:
            self._conn.respond(err.status, err.body(), extra_headers=extra_headers)

    def _finish(
        self, status: int, error: str | None, ttfb: float | None = None, usage: Usage = NO_USAGE
    ) -> None:
        if self._finished:
            return
        self._finished = True
        conn = self._conn
        try:
            self._lease.release()
        finally:
            conn.flow = None
            conn.active = None
            self._gw.record(
                self._req,
                self._model,
                self._lease.instance.name,
                status,
                ttfb,
                self._stream,
                usage,
                error,
            )
            conn.request_done()
