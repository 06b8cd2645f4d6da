"""What the web page reads beyond the instance endpoints (issue 12).

* ``GET /v1/requests``: the gateway's requests in flight and the recent ones (from the
  bus's request events, newest last); ``POST /v1/requests/{id}/cancel`` ends one.
* ``GET /v1/devices``: each device's budget, what each instance holds of it, free
  memory and whether each instance would fit now.
* ``GET /v1/instances/{name}/describe``: what ``describe`` prints, as JSON (the page
  follows the log through ``GET /v1/events?logs=NAME``).
* ``POST /v1/playground``: a completion relayed to the daemon's own gateway, so the page
  needs neither a gateway key nor a cross-origin request; the answer streams back as the
  gateway sends it.

All of them take the bearer token or the page's session (with its CSRF token to POST).
"""

from __future__ import annotations

import collections
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException
from fastapi.concurrency import run_in_threadpool
from fastapi.params import Depends
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from llama_orchestrator.config.loader import ConfigError, UnknownInstance
from llama_orchestrator.daemon.events import Event, EventKind
from llama_orchestrator.daemon.seats import free_mib
from llama_orchestrator.daemon.supervisor import Supervisor
from llama_orchestrator.engine.states import State
from llama_orchestrator.home import name_problem

if TYPE_CHECKING:
    from llama_orchestrator.daemon.gateway_host import GatewayHost

RECENT_KEPT = 200
PLAYGROUND_PATHS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}


class PlaygroundRequest(BaseModel):
    model: str = Field(min_length=1, max_length=200)
    prompt: str = Field(max_length=200_000)
    max_tokens: int = Field(128, ge=1, le=32768)
    temperature: float | None = Field(None, ge=0, le=10)
    chat: bool = False  # send the prompt as one user message to /v1/chat/completions
    extra: dict[str, Any] = {}  # passed through in the body (e.g. grammar, ignore_eos)


class RecentRequests:
    """The bus's request events, newest last, bounded (they are not recorded on disk)."""

    def __init__(self, maxlen: int = RECENT_KEPT) -> None:
        self.rows: collections.deque[dict[str, Any]] = collections.deque(maxlen=maxlen)

    def __call__(self, event: Event) -> None:
        if event.kind is EventKind.REQUEST and event.data is not None:
            self.rows.append({**event.data, "ts": event.ts})


def _check(sup: Supervisor, name: str) -> None:
    problem = name_problem(name)
    if problem:
        raise HTTPException(400, problem)
    try:
        sup.actor(name)
    except UnknownInstance as e:
        raise HTTPException(404, str(e)) from None


def _holdings(
    sup: Supervisor, name: str, snap: Any, loaded: Any, holds: bool
) -> list[tuple[str, dict[str, Any]]]:
    """``(device, entry)`` per device of one instance. ``mib`` is what the scheduler
    counts it for (issue 18): its measured peak once it has one, else its estimate plus
    the device's per-process overhead; ``estimate_mib``, ``measured_mib`` and
    ``peak_mib`` are shown beside it."""
    from llama_orchestrator.daemon.actor.preflight import memory_mb
    from llama_orchestrator.daemon.scheduler import Claim
    from llama_orchestrator.daemon.seats import measured_count

    estimate = memory_mb(loaded)
    counted = sup.scheduler.counted(Claim(name, memory_mb=estimate))
    if holds:
        counted = measured_count(snap, counted)
    out = []
    for key, mib in sorted(counted.items()):
        seen = snap.memory.get(key) if holds else None
        entry = {
            "name": name,
            "mib": mib,
            "estimate_mib": estimate.get(key),
            "measured_mib": seen.measured_mb if seen else None,
            "peak_mib": seen.peak_mb if seen else None,
            "running": holds,
            "state": snap.state.value,
        }
        out.append((key, entry))
    return out


def devices_view(sup: Supervisor, free: dict[str, int | None]) -> dict[str, Any]:
    """Budgets, holdings and fit verdicts. ``free`` is each device's free MiB now.

    An instance's ``mib`` is what the scheduler counts it for (:func:`_holdings`)."""
    budget = sup.scheduler.effective_budget()
    devices: dict[str, dict[str, Any]] = {}

    def device(key: str) -> dict[str, Any]:
        if key not in devices:
            devices[key] = {
                "device": key,
                "budget_mib": budget.memory_mb.get(key),
                "free_mib": free.get(key),
                "used_mib": 0,
                "instances": [],
            }
        return devices[key]

    for key in budget.memory_mb:
        device(key)
    needs: list[tuple[str, str, int, bool]] = []
    for name in sorted(sup.actors):
        snap = sup.actors[name].snapshot
        loaded = snap.loaded or sup.configs.valid(name)
        if loaded is None:
            continue
        holds = snap.attached and snap.state is not State.STOPPED
        for key, entry in _holdings(sup, name, snap, loaded, holds):
            device(key)["instances"].append(entry)
            if holds:
                device(key)["used_mib"] += entry["mib"]
            needs.append((name, key, entry["mib"], holds))
    verdicts = []
    for name, key, mib, holds in needs:
        d = devices[key]
        own = mib if holds else 0
        limits = []
        if d["budget_mib"] is not None:
            limits.append(("budget", d["budget_mib"] - (d["used_mib"] - own)))
        if d["free_mib"] is not None:
            limits.append(("free memory", d["free_mib"] + own))
        short = [(what, room) for what, room in limits if mib > room]
        if holds:
            verdict, reason = "running", f"holds {mib} MiB of {key}"
        elif not short:
            verdict = "fits"
            reason = f"needs {mib} MiB; room: " + (
                ", ".join(f"{what} {room} MiB" for what, room in limits) or "no limit known"
            )
        else:
            verdict = "does not fit"
            reason = f"needs {mib} MiB; " + ", ".join(
                f"{what} leaves {max(room, 0)} MiB" for what, room in short
            )
            if any(what == "budget" for what, _ in short):
                reason += " (idle instances may be stopped to make room)"
        verdicts.append(
            {"instance": name, "device": key, "need_mib": mib, "verdict": verdict, "reason": reason}
        )
    # what max_running is checked against: the scheduler's holders (a remote instance
    # holds nothing here, so it is not counted)
    running = len(sup.scheduler.holders)
    return {
        "devices": [devices[k] for k in sorted(devices)],
        "max_running": budget.max_running,
        "running": running,
        "fit": verdicts,
    }


async def relay_playground(
    gw: Any, host: GatewayHost | None, body: PlaygroundRequest
) -> StreamingResponse:
    """A streamed completion through the daemon's gateway ``gw`` (as a client would)."""
    import httpx

    url = gw.url.replace("://0.0.0.0:", "://127.0.0.1:").replace("://[::]:", "://[::1]:")
    keys = host.settings.api_keys if host is not None and host.settings else ()
    headers = {"Authorization": f"Bearer {keys[0]}"} if keys else {}
    payload: dict[str, Any] = {**body.extra, "model": body.model, "stream": True}
    payload["max_tokens"] = body.max_tokens
    if body.temperature is not None:
        payload["temperature"] = body.temperature
    if body.chat:
        payload["messages"] = [{"role": "user", "content": body.prompt}]
    else:
        payload["prompt"] = body.prompt
    path = PLAYGROUND_PATHS["chat" if body.chat else "completions"]
    client = httpx.AsyncClient(timeout=httpx.Timeout(600, connect=5))
    try:
        req = client.build_request("POST", url + path, json=payload, headers=headers)
        resp = await client.send(req, stream=True)
    except httpx.HTTPError as e:
        await client.aclose()
        raise HTTPException(409, f"the gateway at {url} did not answer: {e}") from None

    async def relay() -> AsyncIterator[bytes]:
        try:
            async for chunk in resp.aiter_raw():
                yield chunk
        except httpx.HTTPError as e:
            error = {"error": {"message": f"the gateway broke off: {e}"}}
            yield f"data: {json.dumps(error)}\n\n".encode()
        finally:
            await resp.aclose()
            await client.aclose()

    media = resp.headers.get("content-type", "text/event-stream")
    return StreamingResponse(
        relay(),
        status_code=resp.status_code,
        media_type=media,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def data_router(sup: Supervisor, host: GatewayHost | None, auth: list[Depends]) -> APIRouter:
    router = APIRouter()
    recent = RecentRequests()
    sup.bus.add_sink(recent)

    def gateway() -> Any:
        gw = host.gateway if host is not None else None
        if gw is None:
            why = host.reason if host is not None else "no gateway in this daemon"
            raise HTTPException(409, f"the gateway is not listening: {why}")
        return gw

    @router.get("/v1/requests", dependencies=auth)
    async def requests() -> dict[str, Any]:
        """Requests in flight through the gateway, and the recent ones (newest last)."""
        gw = host.gateway if host is not None else None
        return {
            "listening": gw is not None,
            "in_flight": gw.inflight.rows() if gw is not None else [],
            "recent": list(recent.rows),
        }

    @router.post("/v1/requests/{request_id}/cancel", dependencies=auth)
    async def cancel(request_id: int) -> dict[str, Any]:
        """End a request in flight: its client connection is closed, which closes the
        instance's connection (the server stops generating)."""
        if not gateway().inflight.cancel(request_id):
            raise HTTPException(404, f"no request {request_id} in flight (it may have ended)")
        return {"cancelled": request_id}

    @router.get("/v1/devices", dependencies=auth)
    async def devices() -> dict[str, Any]:
        """Each device's memory budget, what each instance holds of it, free memory,
        and whether each stopped instance would fit now."""
        view = devices_view(sup, {})
        keys = [d["device"] for d in view["devices"]]

        def probe() -> dict[str, int | None]:
            return {k: free_mib(k) for k in keys}

        return devices_view(sup, await run_in_threadpool(probe))

    @router.get("/v1/instances/{name}/describe", dependencies=auth)
    async def describe(name: str) -> dict[str, Any]:
        """What ``llama-orch describe`` shows: config with defaults, command line..."""
        from llama_orchestrator.views.describe import describe_data

        _check(sup, name)
        try:
            return await run_in_threadpool(describe_data, sup.home, name)
        except (ConfigError, UnknownInstance) as e:
            raise HTTPException(409, str(e)) from None

    @router.post("/v1/playground", dependencies=auth, response_class=StreamingResponse)
    async def playground(body: PlaygroundRequest) -> StreamingResponse:
        """A streamed completion through the daemon's gateway (as a client would)."""
        return await relay_playground(gateway(), host, body)

    return router
