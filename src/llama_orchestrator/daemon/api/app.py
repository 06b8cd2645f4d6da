"""The daemon's control API: a small REST API on loopback, guarded by a bearer token.

It is the API the CLI speaks today and the REST API that later clients (a web page,
remote tools) will use, so it is versioned under ``/v1`` and described by OpenAPI
(``GET /openapi.json``, also without a token, so tools can discover it). There is no
``/docs`` or ``/redoc``: those pages load their script from a CDN, and a script on the
daemon's origin could read the web page's session and drive the daemon.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, params
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from llama_orchestrator import __version__
from llama_orchestrator.config.loader import ConfigError, UnknownInstance
from llama_orchestrator.daemon.api.events import events_router
from llama_orchestrator.daemon.api.instances import (
    InstanceStatus,
    commands_router,
    instances_router,
)
from llama_orchestrator.daemon.api.webdata import data_router
from llama_orchestrator.daemon.supervisor import Supervisor
from llama_orchestrator.errors import ErrorCode
from llama_orchestrator.home import name_problem
from llama_orchestrator.web.auth import HostGuard, WebAuth, authorize
from llama_orchestrator.web.routes import ui_router

if TYPE_CHECKING:
    from llama_orchestrator.daemon.gateway_host import GatewayHost
    from llama_orchestrator.daemon.reload import ScanReport

__all__ = ["InstanceStatus", "create_app"]  # the instance model, where the tests found it


class ValidationReport(BaseModel):
    valid: list[str] = []
    problems: list[str] = []


class ReloadReport(BaseModel):
    instances: int
    added: list[str] = []
    changed: list[str] = []
    removed: list[str] = []
    invalid: dict[str, str] = {}
    drifted: list[str] = []
    gateway: str | None = None


class DaemonInfo(BaseModel):
    pid: int
    version: str
    home: str
    started_at: float
    uptime_s: float
    instances: int


async def unknown_instance(request: Request, exc: Exception) -> JSONResponse:
    """A command's refusal shape (``ok``, ``error``, ``message``), and ``detail`` as every
    other error of the API has it."""
    name = request.path_params.get("name", "")
    body = {"name": name, "ok": False, "error": ErrorCode.UNKNOWN_INSTANCE.value}
    return JSONResponse({**body, "message": str(exc), "detail": str(exc)}, status_code=404)


async def bad_request(_request: Request, exc: Exception) -> JSONResponse:
    """A parameter out of its bounds is the client's mistake: 400, naming it."""
    assert isinstance(exc, RequestValidationError)
    problems = [
        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
    ]
    return JSONResponse({"detail": "; ".join(problems)}, status_code=400)


def create_app(
    sup: Supervisor,
    token: str,
    on_shutdown: Callable[[], None] | None = None,
    gateway_status: Callable[[], dict[str, Any]] | None = None,
    *,
    gateway_host: GatewayHost | None = None,
    rescan: Callable[[], Awaitable[ScanReport]] | None = None,
    web: WebAuth | None = None,
    allowed_hosts: Iterable[str] = (),
) -> FastAPI:
    """The control API. Every endpoint but OpenAPI and the login takes the bearer token
    or the web page's session (web/auth.py); any ``Host`` but loopback and
    ``allowed_hosts`` is refused (421) before routing."""
    app = FastAPI(
        title="llama-orchestrator control API",
        version=__version__,
        description="Start, stop and watch llama.cpp server instances.",
        docs_url=None,  # no CDN script on the origin of the page's session
        redoc_url=None,
    )
    web = web if web is not None else WebAuth()
    app.state.web = web
    app.add_middleware(HostGuard, allowed=allowed_hosts)

    def require_token(request: Request) -> None:
        authorize(request, token, web)

    auth = [Depends(require_token)]
    app.include_router(events_router(sup, auth))
    app.include_router(ui_router(web, token, auth))
    app.include_router(data_router(sup, gateway_host, auth))
    hooks = DaemonHooks(on_shutdown, gateway_status, rescan)
    app.include_router(daemon_router(sup, hooks, auth))
    app.include_router(instances_router(sup, auth))
    app.include_router(commands_router(sup, gateway_host, auth))
    app.add_exception_handler(UnknownInstance, unknown_instance)
    app.add_exception_handler(RequestValidationError, bad_request)
    return app


@dataclass(frozen=True)
class DaemonHooks:
    """What the daemon's own endpoints reach beyond the supervisor."""

    on_shutdown: Callable[[], None] | None = None  # the path of SIGTERM
    gateway_status: Callable[[], dict[str, Any]] | None = None
    rescan: Callable[[], Awaitable[ScanReport]] | None = None  # `daemon reload`, SIGHUP


def daemon_router(sup: Supervisor, hooks: DaemonHooks, auth: list[params.Depends]) -> APIRouter:
    router = APIRouter()
    started = time.time()

    @router.get("/v1/daemon", dependencies=auth)
    async def daemon_info() -> DaemonInfo:
        return DaemonInfo(
            pid=os.getpid(),
            version=__version__,
            home=str(sup.home.root),
            started_at=started,
            uptime_s=time.time() - started,
            instances=len(sup.actors),
        )

    @router.post("/v1/daemon/shutdown", dependencies=auth)
    async def shutdown() -> dict[str, str]:
        """Stop the daemon. Instances keep running and are re-adopted at its next start."""
        if hooks.on_shutdown is not None:
            # After this reply is written: the same path as SIGTERM.
            asyncio.get_running_loop().call_later(0.05, hooks.on_shutdown)
        return {"status": "shutting down"}

    @router.post("/v1/daemon/reload", dependencies=auth)
    async def reload() -> ReloadReport:
        """Rescan ``instances/`` and ``gateway.json`` now, as SIGHUP does (issue 11)."""
        if hooks.rescan is None:
            raise HTTPException(409, "no config reloads in this daemon")
        return ReloadReport(**(await hooks.rescan()).to_dict())

    @router.get("/v1/gateway", dependencies=auth)
    async def gateway() -> dict[str, Any]:
        """The gateway: its URL, whether it listens (or why not), keys, routes, load."""
        if hooks.gateway_status is None:
            return {"url": None, "listening": False, "reason": "no gateway in this daemon"}
        return hooks.gateway_status()

    @router.post("/v1/validate", dependencies=auth)
    async def validate(names: str) -> ValidationReport:
        """Validate the configs of ``names`` (comma-separated) without acting on them."""
        report = ValidationReport()
        for name in filter(None, names.split(",")):
            problem = name_problem(name)
            if problem:
                raise HTTPException(400, problem)
            found = sup.configs.refresh(name)  # the file as it is now
            if found is None:
                raise HTTPException(404, str(UnknownInstance(name, sup.home.instance_names())))
            if isinstance(found, ConfigError):
                report.problems.extend(str(p) for p in found.problems)
            else:
                report.valid.append(name)
        return report

    return router
