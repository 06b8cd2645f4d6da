"""What an instance actor is given, instead of the whole supervisor: its seams.

Tests build an ``ActorContext`` with a fake launcher (scripted processes), a
``FakeClock`` and an ``httpx.MockTransport``, and drive an actor through a history in
milliseconds; the daemon builds it with the real ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx

from llama_orchestrator.clock import SYSTEM_CLOCK, Clock
from llama_orchestrator.daemon.configs import Configs
from llama_orchestrator.daemon.events import EventBus
from llama_orchestrator.daemon.kvcache import KvCache
from llama_orchestrator.daemon.offload import Offload, in_thread
from llama_orchestrator.daemon.overheads import Overheads
from llama_orchestrator.daemon.scheduler import Scheduler
from llama_orchestrator.engine.command import KV_DIR, LaunchSpec
from llama_orchestrator.engine.process import (
    ChildProcess,
    ServerProcess,
    adopt,
    open_server,
    spawn,
)
from llama_orchestrator.gpu.usage import Reading, measure
from llama_orchestrator.home import Home
from llama_orchestrator.logs.rotate import rotate_if_needed
from llama_orchestrator.state.db import StateStore


class Launcher(Protocol):
    """Creates and re-finds server processes."""

    def spawn(self, spec: LaunchSpec, name: str) -> ServerProcess: ...

    def open(self, spec: LaunchSpec, name: str) -> Callable[[], ServerProcess]:
        """``spawn`` in two parts: this one blocks (logs opened, the process created) and
        needs no event loop, so it runs in a thread; what it returns makes the handle,
        on the loop (issue 17)."""
        ...

    def adopt(self, pid: int, create_time: float, cmdline: list[str]) -> ServerProcess | None: ...

    def rotate(self, path: Path, max_bytes: int, keep: int) -> None:
        """Rotate a log before a start (nobody writes it then)."""
        ...


class ProcessLauncher:
    """The real thing: processes in their own session, logs on disk."""

    def spawn(self, spec: LaunchSpec, name: str) -> ServerProcess:
        return spawn(spec, name)

    def open(self, spec: LaunchSpec, name: str) -> Callable[[], ServerProcess]:
        opened = open_server(spec, name)
        return lambda: ChildProcess(*opened)

    def adopt(self, pid: int, create_time: float, cmdline: list[str]) -> ServerProcess | None:
        return adopt(pid, create_time, cmdline)

    def rotate(self, path: Path, max_bytes: int, keep: int) -> None:
        rotate_if_needed(path, max_bytes, keep)


@dataclass
class ActorContext:
    home: Home
    store: StateStore
    bus: EventBus
    http: httpx.AsyncClient
    scheduler: Scheduler
    configs: Configs  # the daemon's one reader of instance configs (daemon/configs.py)
    launcher: Launcher = field(default_factory=ProcessLauncher)
    clock: Clock = SYSTEM_CLOCK
    # each health check as it is done: (instance, kind, seconds), for the metrics
    on_check: Callable[[str, str, float], None] | None = None
    offload: Offload = in_thread  # tests run it inline, or hold it to interleave commands
    # a running server's memory per device (pid, backend, device id; issue 18): blocking,
    # run through ``offload``; tests inject a scripted reader
    measure: Callable[[int, str, int], Mapping[str, Reading]] = measure
    overheads: Overheads = field(default_factory=Overheads)  # learnt per device
    kv: KvCache | None = None  # saved slots (issue 21); made here unless given

    def __post_init__(self) -> None:
        if self.kv is None:
            root = self.home.root / KV_DIR
            self.kv = KvCache(root, self.http, self.bus, offload=self.offload, now=self.clock.time)
