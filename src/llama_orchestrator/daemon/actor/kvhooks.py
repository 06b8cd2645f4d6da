"""The actor's two moments for saved slots (issue 21; daemon/kvcache.py): a stop that is
not a failure saves first, a start restores before it is reported ready."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from llama_orchestrator.config.loader import LoadedConfig
from llama_orchestrator.daemon.actor.context import ActorContext
from llama_orchestrator.daemon.actor.watch import Post, stop_process
from llama_orchestrator.daemon.kvcache import KvCache
from llama_orchestrator.engine.command import slot_save_dir
from llama_orchestrator.engine.process import ServerProcess

log = logging.getLogger("llama_orchestrator.kvcache")


def kv_for(ctx: ActorContext, loaded: LoadedConfig | None) -> KvCache | None:
    """The slot cache when this run keeps its slots: a local server whose config did not
    opt out (``gateway.kv_cache: false``)."""
    if ctx.kv is None or not ctx.kv.enabled or loaded is None:
        return None
    if slot_save_dir(loaded, ctx.home.root) is None:
        return None
    return ctx.kv if loaded.config.gateway.kv_cache is not False else None


async def save_then_stop(
    kv: KvCache,
    loaded: LoadedConfig,
    url: str,
    home_root: Path,
    proc: ServerProcess,
    grace: float,
    why: str,
    post: Post,
) -> None:
    """Save the slots (never past the cache's save budget), then stop as any stop does."""
    folder = slot_save_dir(loaded, home_root)
    try:
        if folder is not None and not proc.has_exited():
            await kv.save(loaded.name, url, loaded.raw_hash, folder)
    except Exception:  # whatever the save did, the server is stopped: never left STOPPING
        log.exception("%s: saving its slots failed; stopping it anyway", loaded.name)
    await stop_process(proc, grace, why, post)


def restorer(
    ctx: ActorContext, loaded: LoadedConfig | None, url: str
) -> Callable[[], Awaitable[object]] | None:
    """What the readiness poll awaits between the server's first 200 and Ready, if any."""
    kv = kv_for(ctx, loaded)
    if kv is None or loaded is None:
        return None
    return lambda: kv.restore(loaded.name, url, loaded.raw_hash)
