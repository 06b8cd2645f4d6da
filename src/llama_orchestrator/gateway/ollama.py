"""The Ollama API on the gateway's routing (issue 20).

Tools that speak only Ollama's API reach every instance through the same names, keys,
queues, on-demand starts, metrics and request records as the OpenAI routes:

* ``/api/version``, ``/api/tags`` (every name), ``/api/ps`` (the names serving now),
  ``/api/show``;
* ``/api/chat``, ``/api/generate`` (NDJSON streams, or one answer with ``stream:
  false``), ``/api/embed``, ``/api/embeddings``: translated (``ollama_translate``) and sent
  over the proxy path's pooled connections (``ollama_relay``);
* ``keep_alive``: ``0`` stops the instance once the answer is out; a duration (``"5m"``,
  seconds) stops it once idle that long, and a negative one never, instead of its
  config's ``ttl`` until it stops; a ``/api/generate`` or ``/api/chat`` with no prompt
  loads the instance, or unloads it with ``keep_alive: 0``, as in Ollama;
* ``/api/pull``, ``/api/push``, ``/api/create``, ``/api/copy``, ``/api/delete``: models are
  files an instance config names, so these answer 501 saying so.

Errors have Ollama's shape, ``{"error": "..."}``, with the OpenAI routes' status codes.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Protocol

from llama_orchestrator.gateway import ollama_translate as t
from llama_orchestrator.gateway.affinity import Key, request_key
from llama_orchestrator.gateway.errors import GatewayError
from llama_orchestrator.gateway.forward import ForwardHost
from llama_orchestrator.gateway.inbound import parse_body
from llama_orchestrator.gateway.inflight import InFlight
from llama_orchestrator.gateway.management import load, state_of, unload
from llama_orchestrator.gateway.ollama_relay import OllamaForward, ollama_error
from llama_orchestrator.gateway.records import NO_USAGE
from llama_orchestrator.gateway.router import Lease
from llama_orchestrator.gateway.server import PENDING, HttpConnection, Request


class OllamaHost(ForwardHost, Protocol):
    """What the Ollama routes use of the gateway (``app.Gateway``)."""

    inflight: InFlight

    @property
    def created(self) -> int: ...


# What /api/version reports: an Ollama release whose API these routes follow.
OLLAMA_VERSION = "0.12.0"
MODEL_ROUTES = {
    b"/api/chat": (t.CHAT, b"/v1/chat/completions"),
    b"/api/generate": (t.GENERATE, b"/v1/chat/completions"),
    b"/api/embed": (t.EMBED, b"/v1/embeddings"),
    b"/api/embeddings": (t.EMBEDDINGS, b"/v1/embeddings"),
}
REFUSED = {
    b"/api/pull": "pulling models",
    b"/api/push": "pushing models",
    b"/api/create": "creating models",
    b"/api/copy": "copying models",
    b"/api/delete": "deleting models",
}
_DETAILS = {
    "parent_model": "",
    "format": "gguf",
    "family": "",
    "families": None,
    "parameter_size": "",
    "quantization_level": "",
}


class OllamaApi:
    def __init__(self, gw: OllamaHost) -> None:
        self._gw = gw
        self._unloads: set[asyncio.Task[Any]] = set()

    def _answer(
        self, req: Request, conn: HttpConnection, status: int, doc: Any, model: str | None = None
    ) -> None:
        body = ollama_error(doc) if isinstance(doc, str) else json.dumps(doc).encode()
        conn.respond(status, body, head_only=req.method == b"HEAD")
        error = doc if isinstance(doc, str) else None
        self._gw.record(req, model, None, status, None, False, NO_USAGE, error)

    def dispatch(self, req: Request, conn: HttpConnection) -> Any:
        path = req.path
        try:
            route = MODEL_ROUTES.get(path)
            if route is not None:
                return self._model_route(req, conn, *route)
            if path in REFUSED:
                raise GatewayError(
                    501,
                    "not_supported",
                    f"{REFUSED[path]} is not done through this gateway: models are GGUF files "
                    "that an instance config names (model.path); put the file on disk and "
                    "`llama-orch create` an instance for it",
                )
            if path == b"/api/version":
                self._answer(req, conn, 200, {"version": OLLAMA_VERSION})
            elif path == b"/api/tags":
                self._answer(req, conn, 200, {"models": self._list(False)})
            elif path == b"/api/ps":
                self._answer(req, conn, 200, {"models": self._list(True)})
            elif path == b"/api/show":
                self._show(req, conn)
            else:
                raise GatewayError(404, "not_found", f"no route {path.decode(errors='replace')}")
        except GatewayError as e:
            self._answer(req, conn, e.status, e.message)
        except t.BadRequest as e:
            self._answer(req, conn, 400, str(e))
        return None

    # -- the model list ------------------------------------------------------------------

    def _list(self, running: bool) -> list[dict[str, Any]]:
        gw = self._gw
        created = _iso(gw.created)
        out = []
        for name, members in sorted(gw.router.refresh().items()):
            live = [m for m in members if m.routable]
            if running and not live:
                continue
            entry: dict[str, Any] = {
                "name": name,
                "model": name,
                "modified_at": created,
                "size": 0,
                "digest": "",
                "details": _DETAILS,
            }
            if running:
                ctx = next((m.context_size for m in live if m.context_size), None)
                entry.update(expires_at=None, size_vram=0, context_length=ctx)
            out.append(entry)
        return out

    def _show(self, req: Request, conn: HttpConnection) -> None:
        doc = _json(req.body)
        name = t.model_of(doc)
        members = self._gw.router.members(name)
        if members is None:
            raise GatewayError(404, "model_not_found", f"model '{name}' not found")
        ctx = next((m.context_size for m in members if m.context_size), None)
        self._answer(
            req,
            conn,
            200,
            {
                "modelfile": "",
                "parameters": "",
                "template": "",
                "details": _DETAILS,
                "model_info": {"context_length": ctx},
                "capabilities": ["completion"],
                "modified_at": _iso(self._gw.created),
                "state": min((state_of(m) for m in members), key=_RANK.__getitem__),
            },
            name,
        )

    # -- model routes --------------------------------------------------------------------

    def _model_route(self, req: Request, conn: HttpConnection, kind: int, url: bytes) -> Any:
        if req.method != b"POST":
            raise GatewayError(405, "method_not_allowed", "this route takes POST")
        doc = _json(req.body)
        model = t.model_of(doc)
        doc["model"] = model
        stream = doc.get("stream") is not False and kind in (t.CHAT, t.GENERATE)
        if kind == t.CHAT:
            upstream = t.chat_request(doc, stream)
            empty = not upstream["messages"]
        elif kind == t.GENERATE:
            kind, upstream = t.generate_request(doc, stream)
            url = b"/v1/completions" if kind == t.COMPLETE else url
            empty = not doc.get("prompt")
        else:
            upstream = t.embed_request(doc, kind)
            empty = False
        gw = self._gw
        members = gw.router.members(model)
        if members is None:
            raise GatewayError(404, "model_not_found", f"model '{model}' not found")
        keep = t.keep_alive(doc.get("keep_alive"))
        if empty:  # Ollama's load / unload request
            return self._load_or_unload(req, conn, model, kind, keep)
        req.body = json.dumps(upstream).encode()
        gw.inflight.add(req, conn, model, stream)
        key = request_key(req, upstream) if len(members) > 1 else None  # affinity.py
        lease = gw.router.try_acquire(model, members, key)
        if lease is not None:
            self._forward(req, conn, lease, model, url, stream, kind, keep)
            return PENDING
        return self._wait(req, conn, model, url, stream, kind, keep, key)

    def _forward(
        self,
        req: Request,
        conn: HttpConnection,
        lease: Lease,
        model: str,
        url: bytes,
        stream: bool,
        kind: int,
        keep: int | None,
    ) -> None:
        self._gw.inflight.assign(req, lease.instance.name)
        fwd = OllamaForward(
            self._gw, req, conn, lease, model, url, stream, kind, keep, self._unloads
        )
        fwd.begin()

    async def _wait(
        self,
        req: Request,
        conn: HttpConnection,
        model: str,
        url: bytes,
        stream: bool,
        kind: int,
        keep: int | None,
        key: Key | None,
    ) -> Any:
        gw = self._gw
        try:
            lease = await gw.router.acquire(model, key=key)
        except asyncio.CancelledError:
            gw.record(req, model, None, 499, None, stream, NO_USAGE, "client disconnected")
            raise
        except GatewayError as e:
            extra = b"Retry-After: %d\r\n" % round(e.retry_after) if e.retry_after else b""
            conn.respond(e.status, ollama_error(e.message), extra_headers=extra)
            gw.record(req, model, None, e.status, None, stream, NO_USAGE, e.message)
            return None
        if conn.closed:
            lease.release()
            gw.record(req, model, None, 499, None, stream, NO_USAGE, "client disconnected")
            return None
        self._forward(req, conn, lease, model, url, stream, kind, keep)
        return PENDING

    async def _load_or_unload(
        self, req: Request, conn: HttpConnection, model: str, kind: int, keep: int | None
    ) -> None:
        members = self._gw.router.members(model) or ()
        try:
            if keep == 0:
                if any(m.routable or m.state != "stopped" for m in members):
                    await unload(model, members)
                reason = "unload"
            else:
                result = await load(members)
                if not result.ok:
                    raise GatewayError(503, "model_failed", result.message)
                if keep is not None:
                    for m in members:
                        m.keep_alive(max(0, keep))
                reason = "load"
        except GatewayError as e:
            self._answer(req, conn, e.status, e.message, model)
            return
        line = t.final(kind if kind != t.COMPLETE else t.GENERATE, model, reason, None, 0)
        self._answer(req, conn, 200, line, model)


_RANK = {"running": 0, "loading": 1, "stopped": 2, "fatal": 3}


def _iso(created: int) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))


def _json(body: bytes) -> Any:
    try:
        return parse_body(body) if body else {}
    except GatewayError as e:
        raise t.BadRequest(e.message) from None
