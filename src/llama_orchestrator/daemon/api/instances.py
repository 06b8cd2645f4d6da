"""The control API's instance endpoints: list, inspect, start, stop, restart, remove.

A command goes to the instance's actor and its reply waits until what the command did
is on disk (the store writes in batches, off the loop), so the CLI reading SQLite after
the reply sees it. What is read of an instance comes from its record (the status) or
its actor's snapshot (health), never from the actor's own state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.params import Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from llama_orchestrator.config.loader import LoadedConfig
from llama_orchestrator.daemon.actor import messages as m
from llama_orchestrator.daemon.actor.handlers import InstanceActor
from llama_orchestrator.daemon.actor.messages import Outcome
from llama_orchestrator.daemon.actor.preflight import refusal
from llama_orchestrator.daemon.recorder import EVENTS_KEPT
from llama_orchestrator.daemon.supervisor import Supervisor
from llama_orchestrator.engine.states import State
from llama_orchestrator.errors import ErrorCode
from llama_orchestrator.home import name_problem

if TYPE_CHECKING:
    from llama_orchestrator.daemon.gateway_host import GatewayHost


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


def get_actor(sup: Supervisor, name: str) -> InstanceActor:
    """The instance's actor; 400 for a name that cannot be one (UnknownInstance: 404,
    answered by the app's handler)."""
    problem = name_problem(name)
    if problem:
        raise HTTPException(400, problem)
    return sup.actor(name)


async def ask(
    sup: Supervisor, actor: InstanceActor, make: Callable[[m.Reply], m.Command]
) -> Outcome:
    """A command's outcome, once what it did is on disk (the store writes in batches,
    off the loop: issue 17), so the CLI reading SQLite after the reply sees it."""
    outcome = await actor.request(make)
    await sup.recorded()
    return outcome


def result(
    sup: Supervisor, name: str, outcome: Outcome, *, recreated: bool = False
) -> JSONResponse:
    body = CommandResult(
        name=name, instance=status_of(sup, name), recreated=recreated, **outcome.to_dict()
    )
    code = 200 if outcome.ok or outcome.error is None else outcome.error.http_status
    return JSONResponse(body.model_dump(), status_code=code)


def instances_router(sup: Supervisor, auth: list[Depends]) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/instances", dependencies=auth)
    async def list_instances() -> list[InstanceStatus]:
        names = sorted(set(sup.home.instance_names()) | {r.name for r in sup.store.all()})
        return [status_of(sup, n) for n in names]

    @router.get("/v1/instances/{name}", dependencies=auth)
    async def get_instance(name: str) -> InstanceStatus:
        get_actor(sup, name)
        return status_of(sup, name)

    @router.get("/v1/instances/{name}/events", dependencies=auth)
    async def instance_events(
        name: str, limit: int = Query(50, ge=1, le=EVENTS_KEPT)
    ) -> list[dict[str, Any]]:
        get_actor(sup, name)
        return sup.store.events(name, limit)

    @router.get("/v1/instances/{name}/health", dependencies=auth)
    async def instance_health(name: str) -> HealthReport:
        """The health state, the last checks with their latency, the failure streak."""
        snap = get_actor(sup, name).snapshot
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

    return router


def commands_router(
    sup: Supervisor, gateway_host: GatewayHost | None, auth: list[Depends]
) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/instances/{name}/start", dependencies=auth, response_model=CommandResult)
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
        actor = get_actor(sup, name)
        if recreate and config_drifted(sup, actor):
            outcome = await ask(sup, actor, lambda r: m.Restart(r, wait_ready=wait))
            return result(sup, name, outcome, recreated=True)
        return result(
            sup, name, await ask(sup, actor, lambda r: m.Start(r, wait_ready=wait, force=force))
        )

    @router.post("/v1/instances/{name}/stop", dependencies=auth, response_model=CommandResult)
    async def stop(name: str) -> JSONResponse:
        return result(sup, name, await ask(sup, get_actor(sup, name), m.Stop))

    @router.delete("/v1/instances/{name}", dependencies=auth, response_model=CommandResult)
    async def remove(name: str, force: bool = False, logs: bool = False) -> JSONResponse:
        """Remove an instance: its folder and records (and logs with ``logs``).

        A running instance is refused (409) unless ``force``, which stops it first.
        """
        actor = get_actor(sup, name)
        snap = actor.snapshot
        if snap.state not in (State.STOPPED, State.EXITED, State.FATAL) or snap.attached:
            if not force:
                return result(
                    sup,
                    name,
                    refusal(
                        ErrorCode.RUNNING,
                        f"it is {snap.state.value}; "  # the CLI prints the name before it
                        f"`llama-orch down {name}` first, or `llama-orch rm --force {name}`",
                    ),
                )
            stopped = await ask(sup, actor, m.Stop)
            if not stopped.ok:
                return result(sup, name, stopped)
        gone = sup.remove(name, logs=logs)
        if sup.ctx.kv is not None and (files := await sup.ctx.kv.drop_instance(name)):
            gone.append(f"its {files} saved KV cache file(s)")
        if gateway_host is not None:
            gateway_host.forget(name)  # its routes go now; a new folder gets a new view
        await sup.recorded()
        body = CommandResult(name=name, ok=True, message="removed " + ", ".join(gone))
        return JSONResponse(body.model_dump())

    @router.post("/v1/instances/{name}/restart", dependencies=auth, response_model=CommandResult)
    async def restart(name: str) -> JSONResponse:
        return result(sup, name, await ask(sup, get_actor(sup, name), m.Restart))

    return router
