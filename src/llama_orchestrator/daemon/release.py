"""Release before reuse (issue 18): a swap's next load starts only once the victims'
memory is free.

The scheduler frees a victim's room when its actor reports it stopped, which is after
its process has exited and been reaped (daemon/actor/watch.py ``stop_process``). On a
GPU the driver hands the memory back a little later (about 25 ms after exit on an H200
with CUDA 13), and a load begun in that window fails out of memory (llama.cpp #23668,
an OOM right after a swap). So a start that evicted something waits, before its load,
until each GPU it uses shows the room it needs as free memory: polled every
:data:`POLL_S`, bounded by the start's ``load_timeout``. Host memory needs no wait: the
kernel frees an exited process's pages before its parent can reap it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial

from llama_orchestrator.clock import Clock
from llama_orchestrator.daemon.offload import Offload, in_thread

POLL_S = 0.025


async def await_room(
    free_mib: Callable[[str], int | None],
    clock: Clock,
    need_mb: Mapping[str, int],
    limit_s: float,
    victims: tuple[str, ...],
    offload: Offload = in_thread,
) -> str:
    """Poll each GPU of ``need_mb`` until its free memory (``free_mib``, blocking: run through
    ``offload``) holds the need; returns what was waited for, in words ("" when nothing)."""
    start = clock.monotonic()
    said: list[str] = []
    for device, need in sorted(need_mb.items()):
        if device == "cpu" or need <= 0:
            continue
        while True:
            free = await offload(partial(free_mib, device))
            waited = clock.monotonic() - start
            if free is None:
                said.append(f"{device} reports no free memory: not waited for")
                break
            if free >= need:
                said.append(
                    f"waited {waited:.2f} s after {', '.join(victims)} exited for {device} "
                    f"to show {need} MiB free ({free} MiB)"
                )
                break
            if waited >= limit_s:
                said.append(
                    f"{device} still showed only {free} MiB free of the {need} MiB needed "
                    f"{waited:.0f} s after {', '.join(victims)} exited (load_timeout); "
                    "loading anyway"
                )
                break
            await clock.sleep(POLL_S)
    return "; ".join(said)
