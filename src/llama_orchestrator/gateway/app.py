"""The gateway: one OpenAI-compatible address in front of every instance (issue 9).

``Gateway`` serves HTTP/1.1 on its own asyncio protocol (``server.HttpConnection``) and
answers each request from one of these kinds of route:

* ``/health``: the gateway itself, no key needed;
* ``/v1/models`` (and ``/models``, ``/v1/models/{id}``): every routable name (instances
  and aliases) with its state, and ``/models/load`` / ``/models/unload``, the llama.cpp
  router's model control (``management``);
* ``/api/*``: the Ollama API on the same routing (``ollama``);
* the model routes (``ROUTED``): the target is the JSON body's ``model`` (GET:
  ``?model=``); the request takes a lease through the ``Router`` (waiting, starting on
  demand) and is relayed to that instance;
* ``/upstream/{instance}/{path}``: any method, straight to one instance.

The body is read once, ``model`` is found with ``json.loads`` (``inbound``) and the
original bytes are forwarded (``forward``); the answer is relayed as it arrives over a
pooled keep-alive connection (``proxy``). A streaming request that has to wait gets a
``: loading`` event stream meanwhile (``loading``). A page in a browser gets CORS
answers (``cors``). This module holds the ``Gateway`` itself: listening and closing, its
status, and which route answers a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from llama_orchestrator.clock import SYSTEM_CLOCK, Clock
from llama_orchestrator.gateway.affinity import Key, request_key
from llama_orchestrator.gateway.backend import Directory
from llama_orchestrator.gateway.cors import Cors, is_preflight
from llama_orchestrator.gateway.errors import (
    GatewayError,
    error_headers,
    foreign_page_refused,
    invalid_api_key,
    invalid_config,
    loop_detected,
    model_not_found,
)
from llama_orchestrator.gateway.forward import DROP_KEYS, DROP_REQUEST, VIA, Forward
from llama_orchestrator.gateway.inbound import (
    ROUTED,
    UPSTREAM_PREFIX,
    allowed_hosts,
    authorized,
    foreign_host,
    is_loopback,
    no_route,
    refused_by_headers,
    target_model,
    upstream_target,
)
from llama_orchestrator.gateway.inflight import InFlight
from llama_orchestrator.gateway.loading import LoadingStream
from llama_orchestrator.gateway.management import ManageError, manage, model_body, models_body
from llama_orchestrator.gateway.metrics import CONTENT_TYPE, GatewayMetrics
from llama_orchestrator.gateway.ollama import OllamaApi
from llama_orchestrator.gateway.ollama_relay import ollama_error
from llama_orchestrator.gateway.proxy import sse_fail
from llama_orchestrator.gateway.records import NO_USAGE, RequestRecord, Usage
from llama_orchestrator.gateway.router import Lease, Router
from llama_orchestrator.gateway.server import PENDING, HttpConnection, Request
from llama_orchestrator.gateway.settings import GatewaySettings
from llama_orchestrator.gateway.upstream import Upstreams

log = logging.getLogger(__name__)

HEALTH_BODY = b'{"status": "ok"}'
MANAGE = frozenset({b"/models/load", b"/models/unload"})  # the llama.cpp router's (issue 20)

RequestHook = Callable[[RequestRecord], None]


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
        self.now = clock.monotonic
        self.recording = on_request is not None
        self.router = Router(directory, settings, clock)
        self.upstreams = Upstreams(settings.connect_timeout)
        self._keys = tuple(k.encode() for k in settings.api_keys)
        self._hosts = allowed_hosts()  # LLAMA_ORCH_ALLOWED_HOSTS, as the control API
        self.drop = DROP_KEYS if self._keys else DROP_REQUEST
        self.cors = Cors(settings.allowed_origins, bool(self._keys))
        self.hop = secrets.token_hex(6).encode()  # this gateway's mark in X-Llama-Orch-Via
        self._names = self.router.names  # bound once: the missing-model error lists them
        self._connections: set[HttpConnection] = set()
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._created = int(clock.time())
        self.ollama = OllamaApi(self)  # the /api/* routes (issue 20)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.error: str | None = None  # why the gateway is not listening
        self._bound: tuple[str, int] | None = None
        self.inflight = InFlight(self.now)  # model requests in flight (the web page)
        self.metrics = GatewayMetrics(  # GET /metrics; the host adds its own families
            lambda: {**dict.fromkeys(self.router.names(), 0), **self.router.queue_depths()},
            lambda: {inst.name: inst.in_flight for inst in directory.instances()},
            self.router.affinity,
        )

    def reconfigure(self, settings: GatewaySettings) -> None:
        """New settings for a listening gateway: keys from the next request on, queue
        limits and timeouts from the next wait. The address stays as it was bound."""
        self.settings = settings
        self._keys = tuple(k.encode() for k in settings.api_keys)
        self.drop = DROP_KEYS if self._keys else DROP_REQUEST
        self.cors = Cors(settings.allowed_origins, bool(self._keys))
        self.router.reconfigure(settings)

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
            return HttpConnection(
                self._dispatch, s.max_body_bytes, self.now, self._connections, self._gate
            )

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
        """Close client connections idle between requests for longer than the timeout;
        answer 408 to a request that stopped arriving (``HttpConnection.sweep``)."""
        now, keepalive = self.now(), self.settings.keepalive_timeout
        for conn in list(self._connections):
            conn.sweep(now, keepalive)
        self._schedule_sweep()

    def _gate(self, req: Request) -> bool:
        return refused_by_headers(req, self._keys, self.settings.metrics_public, self._hosts)

    # -- dispatch ------------------------------------------------------------------------

    def _dispatch(self, req: Request, conn: HttpConnection) -> Any:
        path = req.path
        via = req.header(VIA)
        if via is not None and self.hop in via:
            self._fail(req, conn, loop_detected(), None)
            return None
        origin = req.header(b"origin")
        if origin is not None and not self._cors(req, conn, origin):
            return None
        if path == b"/health":
            conn.respond(200, HEALTH_BODY, head_only=req.method == b"HEAD")
            return None
        if path == b"/":  # Ollama clients probe it before anything else
            conn.respond(200, b"Ollama is running", b"text/plain", head_only=req.method == b"HEAD")
            return None
        if not self._keys and (misdirected := foreign_host(req, self._hosts)):
            self._fail(req, conn, misdirected, None)  # DNS rebinding (issue 19)
            return None
        if path == b"/metrics" and (
            self.settings.metrics_public or not self._keys or authorized(req, self._keys)
        ):
            return self._metrics(req, conn)
        if self._keys and not authorized(req, self._keys):
            self._fail(req, conn, invalid_api_key(), None)
            return None
        if path in ROUTED:
            return self._routed(req, conn)
        if path.startswith(b"/api/"):
            return self.ollama.dispatch(req, conn)
        if path == b"/v1/models" or path == b"/models":
            conn.respond(200, models_body(self.router.refresh(), self._created))
            return None
        if path in MANAGE:
            return self._manage(req, conn)
        if path.startswith(b"/v1/models/") or path.startswith(b"/models/"):
            self._model(req, conn)
            return None
        if path.startswith(UPSTREAM_PREFIX):
            return self._upstream(req, conn)
        self._fail(req, conn, no_route(path), None)
        return None

    def _cors(self, req: Request, conn: HttpConnection, origin: bytes) -> bool:
        """A request from a page in a browser: answer its preflight, refuse it (another
        site's page without keys), or mark its answer with CORS headers (cors.py).
        False when it has been answered here."""
        allowed = self.cors.allows(origin)
        if is_preflight(req):
            if allowed:
                asked = req.header(b"access-control-request-headers")
                conn.write(self.cors.preflight(origin, asked))
                return False
        elif allowed:
            conn.cors = self.cors.headers(origin)
            return True
        why = f"it comes from a page of {origin.decode('latin-1')!r}"
        self._fail(req, conn, foreign_page_refused(why), None)
        return False

    async def _metrics(self, req: Request, conn: HttpConnection) -> None:
        body = await self.metrics.exposition()
        conn.respond(200, body, CONTENT_TYPE, head_only=req.method == b"HEAD")

    def _model(self, req: Request, conn: HttpConnection) -> None:
        """``GET /v1/models/{id}``: one entry (the id may hold slashes: ``org/model``)."""
        prefix = b"/v1/models/" if req.path.startswith(b"/v1/") else b"/models/"
        name = unquote(req.path[len(prefix) :].decode(errors="replace"))
        try:
            conn.respond(200, model_body(name, self.router.refresh(), self._created))
        except GatewayError as e:
            self._fail(req, conn, e, name)

    async def _manage(self, req: Request, conn: HttpConnection) -> None:
        """``POST /models/load`` and ``/models/unload`` (the llama.cpp router's API)."""
        try:
            name = await manage(self.router, req.method, req.path, req.body)
        except ManageError as e:
            self._fail(req, conn, e.error, e.name)
            return
        conn.respond(200, b'{"success": true}')
        self.record(req, name, None, 200, None, False, NO_USAGE, None)

    # -- errors and records --------------------------------------------------------------

    def _not_found(self, model: str) -> GatewayError:
        problem = self._directory.broken(model)
        if problem is not None:
            return invalid_config(model, problem)
        return model_not_found(model, self.router.names())

    def _fail(
        self,
        req: Request,
        conn: HttpConnection,
        err: GatewayError,
        model: str | None,
        *,
        stream: bool = False,
        committed: bool = False,
    ) -> None:
        """Answer ``err`` (inside the event stream when one is open: ``committed``) and
        record it."""
        if committed:
            conn.write(sse_fail(err.body()))
        else:
            # The Ollama routes' clients read Ollama's shape, a key refused included.
            body = ollama_error(err.message) if req.path.startswith(b"/api/") else err.body()
            conn.respond(err.status, body, extra_headers=error_headers(err))
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
        self.inflight.discard(req)
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
        self.metrics.observe(record)
        try:
            hook(record)
        except Exception:
            log.exception("the gateway's request hook failed")

    # -- model routes --------------------------------------------------------------------

    def _routed(self, req: Request, conn: HttpConnection) -> Any:
        if req.method not in (b"POST", b"GET"):
            err = GatewayError(405, "method_not_allowed", "this route takes POST (or GET ?model=)")
            self._fail(req, conn, err, None)
            return None
        try:
            model, stream, doc = target_model(req, self._names)
        except GatewayError as e:
            self._fail(req, conn, e, None)
            return None
        members = self.router.members(model)
        if members is None:
            self._fail(req, conn, self._not_found(model), model)
            return None
        self.inflight.add(req, conn, model, stream)
        key = request_key(req, doc) if self.settings.affinity and len(members) > 1 else None
        lease = self.router.try_acquire(model, members, key)
        if lease is not None:
            self.inflight.assign(req, lease.instance.name)
            # The fast path: no task, no await; the upstream's callbacks finish it.
            Forward(self, req, conn, lease, model, req.url, stream, False).begin()
            return PENDING
        return self._routed_wait(req, conn, model, stream, key)

    async def _routed_wait(
        self, req: Request, conn: HttpConnection, model: str, stream: bool, key: Key | None
    ) -> Any:
        loading = LoadingStream(conn, not req.keep_alive) if stream and req.http11 else None
        granted = False

        def forward(lease: Lease) -> None:
            nonlocal granted
            granted = True
            if conn.closed:  # the client went while it waited (its task not yet cancelled)
                lease.release()
                error = "client disconnected while waiting"
                self.record(req, model, None, 499, None, stream, NO_USAGE, error)
                return
            committed = loading is not None and loading.committed
            self.inflight.assign(req, lease.instance.name)
            Forward(self, req, conn, lease, model, req.url, stream, committed).begin()

        try:
            lease = await self.router.acquire(model, loading, forward, key=key)
        except asyncio.CancelledError:
            if not granted:  # dropped from the queue: its client went
                error = "client disconnected while waiting"
                self.record(req, model, None, 499, None, stream, NO_USAGE, error)
            raise
        except GatewayError as e:
            committed = loading is not None and loading.committed
            self._fail(req, conn, e, model, stream=stream, committed=committed)
            return None
        if not granted:
            forward(lease)
        return PENDING

    def _upstream(self, req: Request, conn: HttpConnection) -> Any:
        name, url = upstream_target(req)
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
        lease = Lease(inst, endpoint, self.router)
        Forward(self, req, conn, lease, None, url, False, False).begin()
        return PENDING

    @property
    def created(self) -> int:
        """When this gateway started (wall clock, seconds): the models' ``created``."""
        return self._created
