"""A fixed directory: servers that are already running at known addresses.

For fronting servers the daemon does not own (``python -m llama_orchestrator.gateway
--upstream NAME=URL``) and for measuring the gateway on its own (bench/bench_gateway.py).
Each instance is always routable and never starts anything.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from llama_orchestrator.gateway.backend import Endpoint, StartResult


class StaticInstance:
    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        slots: int = 1,
        aliases: tuple[str, ...] = (),
        context_size: int | None = None,
    ) -> None:
        self._name = name
        self._endpoint = Endpoint(name, base_url.rstrip("/"))
        self._slots = slots
        self._aliases = aliases
        self._context_size = context_size
        self._in_flight = 0

    @property
    def name(self) -> str:
        return self._name

    @property
    def aliases(self) -> tuple[str, ...]:
        return self._aliases

    @property
    def on_demand(self) -> bool:
        return False

    @property
    def slots(self) -> int:
        return self._slots

    @property
    def state(self) -> str:
        return "running"

    @property
    def routable(self) -> bool:
        return True

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def last_error(self) -> str | None:
        return None

    @property
    def cutoff(self) -> float:
        return math.inf

    @property
    def context_size(self) -> int | None:
        return self._context_size

    def acquire(self) -> Endpoint | None:
        self._in_flight += 1
        return self._endpoint

    def release(self) -> None:
        self._in_flight -= 1

    @property
    def answers_as(self) -> str:
        return self._name  # servers given by address are expected to run with -a NAME

    async def ensure_started(self) -> StartResult:
        return StartResult(True, "ready")

    def keep_alive(self, seconds: int) -> None:
        pass  # never started nor stopped here

    async def unload(self, reason: str) -> StartResult:
        return StartResult(False, f"{self._name} is not started by the gateway: stop it there")


class StaticDirectory:
    def __init__(self, instances: Sequence[StaticInstance]) -> None:
        self._instances = sorted(instances, key=lambda i: i.name)
        self._by_name = {i.name: i for i in self._instances}

    def instances(self) -> Sequence[StaticInstance]:
        return self._instances

    def get(self, name: str) -> StaticInstance | None:
        return self._by_name.get(name)

    def broken(self, name: str) -> str | None:
        return None  # upstreams given on the command line have no config
