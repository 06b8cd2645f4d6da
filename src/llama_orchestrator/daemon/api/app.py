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
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from llama_orchestrator import __version__
from llama_orchestrator.config.loader import ConfigError, LoadedConfig, UnknownInstance
from llama_orchestrator.daemon.actor import messages as m
from llama_orchestrator.daemon.actor.handlers import InstanceActor
from llama_orchestrator.daemon.actor.messages import Outcome
from llama_orchestrator.daemon.actor.preflight import refusal
from llama_orchestrator.daemon.api.events import events_router
from llama_orchestrator.daemon.api.webdata import data_router
from llama_orchestrator.daemon.recorder import EVENTS_KEPT
from llama_orchestrator.daemon.supervisor import Supervisor
from llama_orchestrator.engine.states import State
from llama_orchestrator.errors import ErrorCode
from llama_orchestrator.home import name_problem
from llama_orchestrator.web.auth import HostGuard, WebAuth, authorize
from llama_orchestrator.web.routes import ui_router

if TYPE_CHECKING:
    from llama_orchestrator.daemon.gateway_host import GatewayHost
    from llama_orchestrator.daemon.reload import ScanReport


class InstanceStatus(BaseModel):
    name: str
    desired: str
    status: str
    health: str
    pid: int | None = None
    host: str | None = None
    port: int | None = None
    backend: str | None = None
    device: str | None = None
    model: str | None = None
    binary: str | None = None
    binary_version: str | None = None
    start_time: float | None = None
    ready_time: float | None = None
    last_health_check: float | None = None
    restart_count: int = 0
    exit_code: int | None = None
    exit_signal: int | None = None
    last_error: str | None = None
    config_hash: str | None = None


class CommandResult(BaseModel):
    name: str
    ok: bool
    message: str
    error: str | None = None
    ready_ms: float | None = None
    pid: int | None = None
    accepted: bool = False
    stderr_tail: list[str] = []
    problems: list[dict[str, Any]] = []
    recreated: bool = False  # `up` stopped it and started it with its changed config
    instance: InstanceStatus | None = None


class ValidationReport(BaseModel):
    valid: list[str] = []
    problems: list[str] = []


class HealthReport(BaseModel):
    name: str
    status: str
    health: str
    consecutive_failures: int
    retries: int | None = None
    interval: float | None = None
    probe: str | None = None
    last_health_check: float | None = None
    checks: list[dict[str, Any]] = []


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


_STATUS_FIELDS = set(InstanceStatus.model_fields)  # the record's status fields but cmdline


def status_of(sup: Supervisor, name: str) -> InstanceStatus:
    data = sup.store.record(name).status_dict()
    return InstanceStatus(**{k: v for k, v in data.items() if k in _STATUS_FIELDS})


def config_drifted(sup: Supervisor, actor: InstanceActor) -> bool:
    """Whether ``actor``'s running server was started with another config than the valid
    one on disk now (read now; a broken file recreates nothing)."""
    snap = actor.snapshot
    if snap.state is not State.RUNNING or not snap.attached:
        return False
    now = sup.configs.refresh(actor.name, snap)
    return isinstance(now, LoadedConfig) and sup.configs.drifted(actor.name, snap.config_hash)


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
    started = time.time()
    web = web if web is not None else WebAuth()
    app.state.web = web
    app.add_middleware(HostGuard, allowed=allowed_hosts)

    def require_token(request: Request) -> None:
        authorize(request, token, web)

    def get_actor(name: str) -> InstanceActor:
        problem = name_problem(name)
        if problem:
            raise HTTPException(400, problem)
        return sup.actor(name)  # UnknownInstance: 404, answered below

    async def ask(actor: InstanceActor, make: Callable[[m.Reply], m.Command]) -> Outcome:
        """A command's outcome, once what it did is on disk (the store writes in batches,
        off the loop: issue 17), so the CLI reading SQLite after the reply sees it."""
        outcome = await actor.request(make)
        await sup.recorded()
        return outcome

    def result(name: str, outcome: Outcome, *, recreated: bool = False) -> JSONResponse:
        body = CommandResult(
            name=name, instance=status_of(sup, name), recreated=recreated, **outcome.to_dict()
        )
        code = 200 if outcome.ok or outcome.error is None else outcome.error.http_status
        return JSONResponse(body.model_dump(), status_code=code)

    auth = [Depends(require_token)]
    app.include_router(events_router(sup, auth))
    app.include_router(ui_router(web, token, auth))
    app.include_router(data_router(sup, gateway_host, auth))

    @app.exception_handler(UnknownInstance)
    async def unknown(request: Request, exc: UnknownInstance) -> JSONResponse:
        """A command's refusal shape (``ok``, ``error``, ``message``), and ``detail`` as
        every other error of the API has it."""
        name = request.path_params.get("name", "")
        body = {"name": name, "ok": False, "error": ErrorCode.UNKNOWN_INSTANCE.value}
        return JSONResponse({**body, "message": str(exc), "detail": str(exc)}, status_code=404)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        """A parameter out of its bounds is the client's mistake: 400, naming it."""
        problems = [
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
        ]
        return JSONResponse({"detail": "; ".join(problems)}, status_code=400)

    @app.get("/v1/daemon", dependencies=auth)
    async def daemon_info() -> DaemonInfo:
        return DaemonInfo(
            pid=os.getpid(),
            version=__version__,
            home=str(sup.home.root),
            started_at=started,
            uptime_s=time.time() - started,
            instances=len(sup.actors),
        )

    @app.post("/v1/daemon/shutdown", dependencies=auth)
    async def shutdown() -> dict[str, str]:
        """Stop the daemon. Instances keep running and are re-adopted at its next start."""
        if on_shutdown is not None:
            # After this reply is written: the same path as SIGTERM.
            asyncio.get_running_loop().call_later(0.05, on_shutdown)
        return {"status": "shutting down"}

    @app.post("/v1/daemon/reload", dependencies=auth)
    async def reload() -> ReloadReport:
        """Rescan ``instances/`` and ``gateway.json`` now, as SIGHUP does (issue 11)."""
        if rescan is None:
            raise HTTPException(409, "no config reloads in this daemon")
        return ReloadReport(**(await rescan()).to_dict())

    @app.get("/v1/gateway", dependencies=auth)
    async def gateway() -> dict[str, Any]:
        """The gateway: its URL, whether it listens (or why not), keys, routes, load."""
        if gateway_status is None:
            return {"url": None, "listening": False, "reason": "no gateway in this daemon"}
        return gateway_status()

    @app.post("/v1/validate", dependencies=auth)
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

    @app.get("/v1/instances", dependencies=auth)
    async def list_instances() -> list[InstanceStatus]:
        names = sorted(set(sup.home.instance_names()) | {r.name for r in sup.store.all()})
        return [status_of(sup, n) for n in names]

    @app.get("/v1/instances/{name}", dependencies=auth)
    async def get_instance(name: str) -> InstanceStatus:
        get_actor(name)
        return status_of(sup, name)

    @app.get("/v1/instances/{name}/events", dependencies=auth)
    async def instance_events(
        name: str, limit: int = Query(50, ge=1, le=EVENTS_KEPT)
    ) -> list[dict[str, Any]]:
        get_actor(name)
        return sup.store.events(name, limit)

    @app.get("/v1/instances/{name}/health", dependencies=auth)
    async def instance_health(name: str) -> HealthReport:
        """The health state, the last checks with their latency, the failure streak."""
        snap = get_actor(name).snapshot
        hc = snap.loaded.config.healthcheck if snap.loaded else None
        return HealthReport(
            name=name,
            status=snap.state.value,
            health=snap.health.value,
            consecutive_failures=snap.misses,
            retries=hc.retries if hc else None,
            interval=hc.interval if hc else None,
            probe=hc.probe if hc else None,
            last_health_check=snap.last_check,
            checks=list(snap.checks),
        )

    @app.post("/v1/instances/{name}/start", dependencies=auth, response_model=CommandResult)
    async def start(
        name: str, wait: bool = True, recreate: bool = True, force: bool = False
    ) -> JSONResponse:
        """Record desired=running and start.

        With ``wait``, reply once /health answers 200; without, once the server has been
        spawned (``accepted``) or the start was refused (port in use, invalid config...).
        A running server whose config changed since it started is recreated (stopped,
        then started with the new config; ``"recreated": true``) unless ``recreate`` is
        false, as ``docker compose up`` does (issue 11). Under gateway.json's budgets
        idle instances are stopped to make room; ``force`` starts past the budgets.
        """
        actor = get_actor(name)
        if recreate and config_drifted(sup, actor):
            outcome = await ask(actor, lambda r: m.Restart(r, wait_ready=wait))
            return result(name, outcome, recreated=True)
        return result(name, await ask(actor, lambda r: m.Start(r, wait_ready=wait, force=force)))

    @app.post("/v1/instances/{name}/stop", dependencies=auth, response_model=CommandResult)
    async def stop(name: str) -> JSONResponse:
        return result(name, await ask(get_actor(name), m.Stop))

    @app.delete("/v1/instances/{name}", dependencies=auth, response_model=CommandResult)
    async def remove(name: str, force: bool = False, logs: bool = False) -> JSONResponse:
        """Remove an instance: its folder and records (and logs with ``logs``).

        A running instance is refused (409) unless ``force``, which stops it first.
        """
        actor = get_actor(name)
        snap = actor.snapshot
        if snap.state not in (State.STOPPED, State.EXITED, State.FATAL) or snap.attached:
            if not force:
                return result(
                    name,
                    refusal(
                        ErrorCode.RUNNING,
                        f"{name} is {snap.state.value}; "
                        f"`llama-orch down {name}` first, or `llama-orch rm --force {name}`",
                    ),
                )
            stopped = await ask(actor, m.Stop)
            if not stopped.ok:
                return result(name, stopped)
        gone = sup.remove(name, logs=logs)
        if gateway_host is not None:
            gateway_host.forget(name)  # its routes go now; a new folder gets a new view
        await sup.recorded()
        body = CommandResult(name=name, ok=True, message="removed " + ", ".join(gone))
        return JSONResponse(body.model_dump())

    @app.post("/v1/instances/{name}/restart", dependencies=auth, response_model=CommandResult)
    async def restart(name: str) -> JSONResponse:
        return result(name, await ask(get_actor(name), m.Restart))

    return app
