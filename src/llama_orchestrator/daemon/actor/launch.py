"""Opening a run's handle: a spawned server, or a remote instance's (issue 13).

The actor's state machine is one piece of code for both kinds: what differs is only
how a run begins (spawn a process with its logs rotated first, or nothing to spawn),
what is announced, and whether a failing health check stops it.
"""

from __future__ import annotations

from collections.abc import Callable

from llama_orchestrator.daemon.actor.context import ActorContext
from llama_orchestrator.daemon.actor.messages import Report, Spawned
from llama_orchestrator.daemon.actor.preflight import Plan, RemotePlan
from llama_orchestrator.daemon.events import EventKind
from llama_orchestrator.engine.command import slot_save_dir
from llama_orchestrator.engine.process import ServerProcess
from llama_orchestrator.engine.remote import RemoteServer
from llama_orchestrator.redact import shown_argv

AnyPlan = Plan | RemotePlan


def open_run(ctx: ActorContext, plan: AnyPlan, name: str) -> ServerProcess:
    """The new run's handle; OSError when the server cannot be spawned."""
    if isinstance(plan, RemotePlan):
        return RemoteServer(plan.url)
    logs = plan.loaded.config.logs
    for path in (plan.spec.stdout, plan.spec.stderr):
        ctx.launcher.rotate(path, logs.max_size_mb * 1024 * 1024, logs.rotation)
    _slot_folder(ctx, plan)
    return ctx.launcher.spawn(plan.spec, name)


def open_spawned(ctx: ActorContext, plan: Plan, name: str) -> Callable[[], ServerProcess]:
    """A spawn's blocking part, for a thread (issue 17): the logs rotated, the process
    created; it returns what makes the handle on the loop. OSError when it cannot be."""
    logs = plan.loaded.config.logs
    for path in (plan.spec.stdout, plan.spec.stderr):
        ctx.launcher.rotate(path, logs.max_size_mb * 1024 * 1024, logs.rotation)
    _slot_folder(ctx, plan)
    return ctx.launcher.open(plan.spec, name)


def _slot_folder(ctx: ActorContext, plan: Plan) -> None:
    """The slot save folder exists before the server starts: llama-server refuses to
    start with one that does not (issue 21). OSError when it cannot be made."""
    folder = slot_save_dir(plan.loaded, ctx.home.root)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)


def announce(ctx: ActorContext, plan: AnyPlan, proc: ServerProcess, name: str) -> None:
    """The event of a run begun: the PID and command line, or the remote's address."""
    if isinstance(plan, RemotePlan):
        key = "with its key" if plan.api_key else "without a key"
        why = f"remote: checking {plan.url} ({key}); nothing spawned here"
        ctx.bus.emit(name, EventKind.SPAWNED, None, None, why)
    else:
        shown = " ".join(shown_argv(plan.spec.argv))
        ctx.bus.emit(name, EventKind.SPAWNED, None, str(proc.pid), shown)


async def spawn_off_loop(
    ctx: ActorContext, plan: Plan, name: str, generation: int, post: Callable[[Report], None]
) -> None:
    """The actor's side task for a spawn: its blocking part in ``ctx.offload``, then
    Spawned with what makes the handle, or the OSError."""
    try:
        handle: Callable[[], ServerProcess] | OSError = await ctx.offload(
            lambda: open_spawned(ctx, plan, name)
        )
    except OSError as e:
        handle = e
    post(Spawned(generation, handle))
