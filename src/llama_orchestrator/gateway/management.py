"""The model list and the llama.cpp router's management API (issue 20).

Open WebUI drives a llama.cpp router through ``status.value`` in each ``/v1/models`` entry
and ``POST /models/load`` / ``POST /models/unload``. Each entry here carries the router's
fields (``id``, ``aliases``, ``tags``, ``object``, ``owned_by``, ``created``, ``status``,
``source``, ``can_remove``) beside our own (``state``, ``context_size``, ``instances``).
``status`` has the router's ``value`` (loaded, loading, unloaded, or failed: the router
says ``unloaded`` with ``failed: true`` there, and so do we besides ``value``); its
``args`` and ``preset`` describe a router's child process and are left out.

``/models/load`` starts a member of the name as an on-demand request would (budgets and
eviction included, through the daemon's scheduler) and answers once it is ready.
``/models/unload`` stops every running member as ``down`` does, after the requests in
flight on it have finished (``Instance.stop`` drains first). Requests queued for the name
meanwhile stay queued; once it is stopped they start it again on demand, as the router
loads a model a request names.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from llama_orchestrator.errors import OrchestratorError
from llama_orchestrator.gateway.backend import Instance, StartResult
from llama_orchestrator.gateway.errors import GatewayError, bad_request, model_not_found
from llama_orchestrator.gateway.inbound import parse_body
from llama_orchestrator.gateway.starts import COMING_UP

if TYPE_CHECKING:
    from llama_orchestrator.gateway.router import Router

OWNER = "llama-orchestrator"

# Our own state word, and the router's status.value for it.
_ROUTER_VALUE = {"running": "loaded", "loading": "loading", "stopped": "unloaded"}
_STATE_RANK = {"running": 0, "loading": 1, "stopped": 2, "fatal": 3}


def state_of(inst: Instance) -> str:
    """The state /v1/models shows: running, loading, stopped or fatal."""
    if inst.routable:
        return "running"
    state = inst.state
    if state in COMING_UP:
        return "loading"
    if state == "fatal":
        return "fatal"
    return "stopped"


def _status(state: str, members: Iterable[Instance]) -> dict[str, Any]:
    if state != "fatal":
        return {"value": _ROUTER_VALUE[state]}
    errors = [m.last_error for m in members if m.last_error]
    return {"value": "failed", "failed": True, "error": errors[0] if errors else None}


def entry(name: str, members: tuple[Instance, ...], created: int) -> dict[str, Any]:
    """One ``/v1/models`` entry for a routable name."""
    state = min((state_of(m) for m in members), key=_STATE_RANK.__getitem__)
    ctx = next((m.context_size for m in members if m.context_size), None)
    aliases = sorted({a for m in members for a in (m.name, *m.aliases)} - {name})
    return {
        "id": name,
        "object": "model",
        "created": created,
        "owned_by": OWNER,
        "aliases": aliases,
        "tags": [],
        "status": _status(state, members),
        "source": OWNER,
        "can_remove": False,
        "state": state,
        "context_size": ctx,
        "instances": [m.name for m in members],
    }


def models_body(index: Mapping[str, tuple[Instance, ...]], created: int) -> bytes:
    data = [entry(name, index[name], created) for name in sorted(index)]
    return json.dumps({"object": "list", "data": data}).encode()


def model_body(name: str, index: Mapping[str, tuple[Instance, ...]], created: int) -> bytes:
    """``GET /v1/models/{id}`` (the SDKs' ``models.retrieve``): the entry, or 404."""
    members = index.get(name)
    if members is None:
        raise model_not_found(name, index)
    return json.dumps(entry(name, members, created)).encode()


def requested_model(body: bytes) -> str:
    """``{"model": NAME}``, the body of ``/models/load`` and ``/models/unload``."""
    doc = parse_body(body) if body else None  # 400 invalid_json in the API's words
    model = doc.get("model") if isinstance(doc, dict) else None
    if not isinstance(model, str) or not model:
        raise bad_request("missing_model", 'the body names the model to act on: {"model": "NAME"}')
    return model


class ManageError(OrchestratorError):
    """A refused ``/models/load`` or ``/models/unload``, with the name it named (if any)."""

    def __init__(self, error: GatewayError, name: str | None) -> None:
        super().__init__(error.message)
        self.error = error
        self.name = name


async def manage(router: Router, method: bytes, path: bytes, body: bytes) -> str:
    """``POST /models/load`` or ``/models/unload {"model"}``: the name it acted on."""
    name: str | None = None
    try:
        if method != b"POST":
            raise GatewayError(405, "method_not_allowed", 'this route takes POST {"model"}')
        name = requested_model(body)
        members = router.members(name)
        if members is None:
            raise model_not_found(name, router.names())
        if path == b"/models/load":
            result = await load(members)
        else:
            result = await unload(name, members)
        if not result.ok:
            raise GatewayError(503, "model_failed", result.message, retry_after=5)
    except GatewayError as e:
        raise ManageError(e, name) from None
    return name


async def load(members: tuple[Instance, ...]) -> StartResult:
    """Bring one member of a name up (already routable: nothing to do)."""
    if any(m.routable for m in members):
        return StartResult(True, "already loaded")
    candidates = [m for m in members if m.state in COMING_UP] or list(members)
    return await candidates[0].ensure_started()


async def unload(name: str, members: tuple[Instance, ...]) -> StartResult:
    """Stop every member that runs or is starting, each after its requests in flight."""
    busy = [m for m in members if m.routable or m.state in COMING_UP]
    if not busy:
        raise GatewayError(400, "model_not_running", f"model {name!r} is not loaded")
    results = await asyncio.gather(
        *(m.unload(f"unloaded through the gateway ({name})") for m in busy)
    )
    failed = [r.message for r in results if not r.ok]
    return StartResult(not failed, "; ".join(failed) or "unloaded")
