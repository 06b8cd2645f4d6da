"""The gateway: one OpenAI-compatible address in front of every instance (issue 9).

``Gateway`` serves HTTP/1.1 on its own asyncio protocol (``server.HttpConnection``) and
answers each request from one of four kinds of route:

* ``/health``: the gateway itself, no key needed;
* ``/v1/models``: every routable name (instances and aliases) with state and context size;
* the model routes (``ROUTED``): the target is the JSON body's ``model`` (GET:
  ``?model=``); the request takes a lease through the ``Router`` (waiting, starting on
  demand) and is relayed to that instance;
* ``/upstream/{instance}/{path}``: any method, straight to one instance.

The body is read once, ``model`` is found with ``json.loads`` and the original bytes are
forwarded; the answer is relayed as it arrives over a pooled keep-alive connection.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import ipaddress
import json
import logging
import socket
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote

from llama_orchestrator.gateway.backend import Directory, Instance
from llama_orchestrator.gateway.clock import SYSTEM_CLOCK, Clock
from llama_orchestrator.gateway.errors import (
    GatewayError,
    bad_request,
    invalid_api_key,
    model_not_found,
)
from llama_orchestrator.gateway.proxy import (
    CAPTURE_JSON,
    CAPTURE_TAIL,
    Relay,
    chunk,
    sse_error,
    sse_head,
)
from llama_orchestrator.gateway.records import (
    NO_USAGE,
    RequestRecord,
    Usage,
    usage_from_json,
    usage_from_sse_tail,
)
from llama_orchestrator.gateway.router import Lease, Router
from llama_orchestrator.gateway.server import PENDING, HttpConnection, Request
from llama_orchestrator.gateway.settings import GatewaySettings
from llama_orchestrator.gateway.upstream import Target, UpstreamConnection, UpstreamError, Upstreams

log = logging.getLogger(__name__)

ROUTED = frozenset(
    {
        b"/v1/chat/completions",
        b"/v1/completions",
        b"/v1/embeddings",
        b"/v1/responses",
        b"/v1/messages",
        b"/v1/messages/count_tokens",
        b"/v1/rerank",
    }
)
UPSTREAM_PREFIX = b"/upstream/"
# Request headers never forwarded: hop-by-hop, or rewritten by the gateway.
DROP_REQUEST = frozenset(
    {
        b"host",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authorization",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
        b"content-length",
        b"expect",
    }
)
# With gateway keys set, the client's key is the gateway's, not the instance's.
DROP_KEYS = DROP_REQUEST | {b"authorization", b"x-api-key"}
BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})
HEALTH_BODY = b'{"status": "ok"}'

RequestHook = Callable[[RequestRecord], None]


def _state_of(inst: Instance) -> str:
    """The state /v1/models shows: running, loading, stopped or fatal."""
    if inst.routable:
        return "running"
    state = inst.state
    if state in ("starting", "backoff", "running"):
        return "loading"
    if state == "fatal":
        return "fatal"
    return "stopped"


_STATE_RANK = {"running": 0, "loading": 1, "stopped": 2, "fatal": 3}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Gateway:
    def __init__(
        self,
        directory: Directory,
        settings: GatewaySettings,
        *,
        on_request: RequestHook | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._directory = directory
        self.settings = settings
        self._on_request = on_request
        self._clock = clock
        self.now = clock.monotonic
        self.recording = on_request is not None
        self.router = Router(directory, settings, clock)
        self.upstreams = Upstreams(settings.connect_timeout)
        self._keys = tuple(k.encode() for k in settings.api_keys)
        self._drop = DROP_KEYS if self._keys else DROP_REQUEST
        self._connections: set[HttpConnection] = set()
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._created = int(time.time())
        self._loop: asyncio.AbstractEventLoop | None = None
        self.error: str | None = None  # why the gateway is not listening
        self._bound: tuple[str, int] | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self, sock: socket.socket | None = None) -> None:
        s = self.settings
        host = s.host
        if sock is not None:
            host = sock.getsockname()[0]
        if not self._keys and not is_loopback(host):
            self.error = (
                f"refusing to serve on {host} without API keys: anyone on the network could "
                "use every model; set gateway.json api_keys (or api_keys_file), or host "
                "127.0.0.1"
            )
            raise ValueError(self.error)
        loop = self._loop = asyncio.get_running_loop()

        def factory() -> HttpConnection:
            return HttpConnection(self._dispatch, s.max_body_bytes, self.now, self._connections)

        try:
            if sock is not None:
                self._server = await loop.create_server(factory, sock=sock, backlog=1024)
            else:
                self._server = await loop.create_server(
                    factory, s.host, s.port, reuse_address=True, backlog=1024
                )
        except OSError as e:
            why = e.strerror or str(e)
            self.error = f"cannot listen on {s.host}:{s.port}: {why}"
            if e.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
                self.error += " (another program has the port; set gateway.json 'port')"
            raise OSError(e.errno, self.error) from e
        sockets = self._server.sockets
        if sockets:
            addr = sockets[0].getsockname()
            self._bound = (str(addr[0]), int(addr[1]))
        self.error = None
        self._schedule_sweep()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            conn.close()
        await self.router.close()
        self.upstreams.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    @property
    def listening(self) -> bool:
        return self._server is not None and self._server.is_serving()

    @property
    def url(self) -> str:
        if self._bound is not None:
            host, port = self._bound
            host = f"[{host}]" if ":" in host else host
            return f"http://{host}:{port}"
        return self.settings.url

    def status(self) -> dict[str, Any]:
        index = self.router.refresh()
        instances = self._directory.instances()
        return {
            "url": self.url,
            "listening": self.listening,
            "error": self.error,
            "keys": len(self._keys),
            "routes": {name: [m.name for m in members] for name, members in sorted(index.items())},
            "in_flight": {inst.name: inst.in_flight for inst in instances},
            "queued": self.router.queue_depths(),
            "starting": self.router.starting(),
            "connections": len(self._connections),
        }

    def _schedule_sweep(self) -> None:
        if self._loop is None:
            return
        every = max(1.0, min(10.0, self.settings.keepalive_timeout / 4))
        self._sweeper = self._loop.call_later(every, self._sweep)

    def _sweep(self) -> None:
        """Close client connections idle between requests for longer than the timeout."""
        limit = self.now() - self.settings.keepalive_timeout
        for conn in list(self._connections):
            if conn.idle and conn.idle_since < limit:
                conn.close()
        self._schedule_sweep()

    # -- dispatch ------------------------------------------------------------------------

    def _dispatch(self, req: Request, conn: HttpConnection) -> Any:
        path = req.path
        if path == b"/health":
            conn.respond(200, HEALTH_BODY, head_only=req.method == b"HEAD")
            return None
        if self._keys and not self._authorized(req):
            self._fail(req, conn, invalid_api_key(), None)
            return None
        if path in ROUTED:
            return self._routed(req, conn)
        if path == b"/v1/models" or path == b"/models":
            self._models(req, conn)
            return None
        if path.startswith(UPSTREAM_PREFIX):
            return self._upstream(req, conn)
        self._fail(
            req,
            conn,
            GatewayError(
                404,
                "not_found",
                f"no route {path.decode(errors='replace')}; the gateway serves "
                + ", ".join(sorted(p.decode() for p in ROUTED))
                + ", /v1/models, /health and /upstream/INSTANCE/PATH",
            ),
            None,
        )
        return None

    def _authorized(self, req: Request) -> bool:
        offered: list[bytes] = []
        for name, value in req.headers:
            lname = name.lower()
            if lname == b"authorization":
                scheme, _, cred = value.strip().partition(b" ")
                scheme = scheme.lower()
                if scheme == b"bearer":
                    offered.append(cred.strip())
                elif scheme == b"basic":
                    try:
                        user, _, password = base64.b64decode(cred.strip()).partition(b":")
                    except (binascii.Error, ValueError):
                        continue
                    offered += [user, password]
            elif lname == b"x-api-key":
                offered.append(value.strip())
        ok = False
        for candidate in offered:
            if candidate:
                for key in self._keys:
                    ok |= hmac.compare_digest(candidate, key)
        return ok

    def _models(self, req: Request, conn: HttpConnection) -> None:
        index = self.router.refresh()
        data = []
        for name in sorted(index):
            members = index[name]
            states = [_state_of(m) for m in members]
            state = min(states, key=_STATE_RANK.__getitem__)
            ctx = next((m.context_size for m in members if m.context_size), None)
            data.append(
                {
                    "id": name,
                    "object": "model",
                    "created": self._created,
                    "owned_by": "llama-orchestrator",
                    "state": state,
                    "context_size": ctx,
                    "instances": [m.name for m in members],
                }
            )
        body = json.dumps({"object": "list", "data": data}).encode()
        conn.respond(200, body)

    # -- errors and records --------------------------------------------------------------

    def _fail(
        self,
        req: Request,
        conn: HttpConnection,
        err: GatewayError,
        model: str | None,
        *,
        stream: bool = False,
    ) -> None:
        extra = b""
        if err.retry_after is not None:
            extra += b"Retry-After: %d\r\n" % max(1, round(err.retry_after))
        if err.instance:
            extra += b"X-Llama-Orch-Instance: %s\r\n" % err.instance.encode()
        conn.respond(err.status, err.body(), extra_headers=extra)
        self.record(req, model, err.instance, err.status, None, stream, NO_USAGE, err.message)

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
    ) -> None:
        hook = self._on_request
        if hook is None:
            return
        now = self.now()
        record = RequestRecord(
            model=model,
            instance=instance,
            method=req.method.decode(),
            path=req.path.decode(errors="replace"),
            status=status,
            ttfb_s=None if ttfb is None else ttfb - req.started,
            duration_s=now - req.started,
            stream=stream,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            tokens_per_s=usage.tokens_per_s,
            error=error,
        )
        try:
            hook(record)
        except Exception:
            log.exception("the gateway's request hook failed")

    # -- model routes --------------------------------------------------------------------

    def _target_model(self, req: Request) -> tuple[str, bool]:
        """The model a request names, and whether it asks for a stream."""
        if req.method == b"GET":
            values = parse_qs(req.query.decode(errors="replace")) if req.query else {}
            model = values.get("model", [""])[0]
            if not model:
                raise bad_request(
                    "missing_model", "a GET on this route names its model as ?model=NAME"
                )
            return model, False
        try:
            doc = json.loads(req.body)
        except (ValueError, UnicodeDecodeError) as e:
            raise bad_request("invalid_json", f"the request body is not JSON: {e}") from None
        if not isinstance(doc, dict):
            raise bad_request("invalid_json", "the request body is not a JSON object")
        found = doc.get("model")
        if not isinstance(found, str) or not found:
            names = ", ".join(self.router.names()) or "none"
            raise bad_request(
                "missing_model",
                f"the request body has no 'model'; available models: {names}",
            )
        return found, doc.get("stream") is True

    def _routed(self, req: Request, conn: HttpConnection) -> Any:
        if req.method not in (b"POST", b"GET"):
            err = GatewayError(405, "method_not_allowed", "this route takes POST (or GET ?model=)")
            self._fail(req, conn, err, None)
            return None
        try:
            model, stream = self._target_model(req)
        except GatewayError as e:
            self._fail(req, conn, e, None)
            return None
        members = self.router.members(model)
        if members is None:
            self._fail(req, conn, model_not_found(model, self.router.names()), model)
            return None
        lease = self.router.try_acquire(model, members)
        if lease is not None:
            # The fast path: no task, no await; the upstream's callbacks finish it.
            Forward(self, req, conn, lease, model, req.url, stream, False).begin()
            return PENDING
        return self._routed_wait(req, conn, model, stream)

    async def _routed_wait(
        self, req: Request, conn: HttpConnection, model: str, stream: bool
    ) -> Any:
        loading = LoadingStream(conn, not req.keep_alive) if stream and req.http11 else None
        granted = False

        def forward(lease: Lease) -> None:
            nonlocal granted
            granted = True
            if conn.closed:
                lease.release()  # the client went while it waited
                return
            committed = loading is not None and loading.committed
            Forward(self, req, conn, lease, model, req.url, stream, committed).begin()

        try:
            lease = await self.router.acquire(model, loading, forward)
        except asyncio.CancelledError:
            if not granted:  # dropped from the queue: its client went
                error = "client disconnected while waiting"
                self.record(req, model, None, 499, None, stream, NO_USAGE, error)
            raise
        except GatewayError as e:
            if loading is not None and loading.committed:
                loading.fail(e)
                self.record(req, model, e.instance, e.status, None, True, NO_USAGE, e.message)
            else:
                self._fail(req, conn, e, model, stream=stream)
            return None
        if not granted:
            forward(lease)
        return PENDING

    def _upstream(self, req: Request, conn: HttpConnection) -> Any:
        rest = req.path[len(UPSTREAM_PREFIX) :]
        raw_name, _, sub = rest.partition(b"/")
        name = unquote(raw_name.decode(errors="replace"))
        inst = self._directory.get(name)
        if inst is None:
            names = [i.name for i in self._directory.instances()]
            err = GatewayError(
                404,
                "instance_not_found",
                f"no instance {name!r}; instances: {', '.join(names) or 'none'}",
            )
            self._fail(req, conn, err, None)
            return None
        endpoint = inst.acquire()
        if endpoint is None:
            err = GatewayError(
                503,
                "instance_unavailable",
                f"instance {name!r} is not serving (state: {inst.state})"
                + (f"; last error: {inst.last_error}" if inst.last_error else ""),
                instance=name,
            )
            self._fail(req, conn, err, None)
            return None
        url = b"/" + sub + (b"?" + req.query if req.query else b"")
        lease = Lease(inst, endpoint, self.router)
        Forward(self, req, conn, lease, None, url, False, False).begin()
        return PENDING

    def request_bytes(self, req: Request, target: Target, url: bytes) -> bytes:
        parts = [req.method, b" ", url, b" HTTP/1.1\r\nHost: ", target.host_header, b"\r\n"]
        drop = self._drop
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
        gw: Gateway,
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
        self._tried: set[str] = set()

    def begin(self) -> None:
        self._conn.active = self
        try:
            self._target = self._gw.upstreams.target(self._lease.endpoint.base_url)
            self._data = self._gw.request_bytes(self._req, self._target, self._url)
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
            if not self._reroute():
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
            self._lease = other
            self._attempt = 0
            self.begin()
        else:
            self._task = asyncio.get_running_loop().create_task(self._wait_for_other())
        return True

    async def _wait_for_other(self) -> None:
        assert self._model is not None
        try:
            lease = await self._gw.router.acquire(self._model, exclude=frozenset(self._tried))
        except GatewayError as e:
            if self._committed:
                self._conn.write(chunk(sse_error(e.body())) + b"0\r\n\r\n")
            else:
                self._conn.respond(e.status, e.body())
            self._finish(e.status, e.message)
            return
        except asyncio.CancelledError:
            self._finish(499, "client disconnected")
            raise
        if self._finished:
            lease.release()
            return
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
                self._finish(relay.status, None, relay.head_at, usage)
                return
            up.abort()
            name = self._lease.instance.name
            if self._reused and not relay.got_bytes and self._attempt == 0:
                self._attempt = 1  # a stale keep-alive connection: once more on a fresh one
                self._connect()
                return
            if relay.head_at is not None:
                # Mid-response: the client must see a broken message, not a whole one.
                self._conn.abort()
                error = f"instance {name!r} broke the connection mid-response: {relay.lost}"
                self._finish(relay.status, error, relay.head_at)
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
        self._finish(499, "client disconnected")  # 499: nginx's code for it

    def _fail(self, error: str) -> None:
        """Answer 502: the instance could not be reached or broke off before answering."""
        name = self._lease.instance.name
        err = GatewayError(502, "upstream_error", error, instance=name)
        if self._committed:
            self._conn.write(chunk(sse_error(err.body())) + b"0\r\n\r\n")
        else:
            inst = b"X-Llama-Orch-Instance: %s\r\n" % name.encode()
            self._conn.respond(502, err.body(), extra_headers=inst)
        self._finish(502, error)

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


class LoadingStream:
    """For a streaming request that waits: once it is clear that it waits (at once for a
    start, after one interval for a slot), a 200 event stream is opened and ``: loading``
    comments keep it alive, so proxies and clients do not time out (issue 9, on-demand)."""

    def __init__(self, conn: HttpConnection, close: bool) -> None:
        self._conn = conn
        self._close = close
        self._instance: str | None = None
        self.committed = False

    def waiting(self, instance: str | None, starting: bool) -> None:
        self._instance = instance
        if starting:
            self.tick()

    def tick(self) -> None:
        if not self.committed:
            self.committed = True
            if self._close:
                self._conn.must_close = True
            self._conn.write(sse_head(self._instance, self._close) + chunk(b": loading\n\n"))
        else:
            self._conn.write(chunk(b": loading\n\n"))

    def fail(self, err: GatewayError) -> None:
        self._conn.write(chunk(sse_error(err.body())) + b"0\r\n\r\n")
