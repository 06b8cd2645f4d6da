"""Test doubles for the gateway's seams: an instance over a real server process, a list
directory, and a gateway running on its own thread. Tests that move time by hand give the
gateway a ``llama_orchestrator.clock.FakeClock``.

The gateway only sees ``backend.Directory``/``backend.Instance``; these implement them
over servers a test starts itself (the real llama-server or the embedded engine), so the
gateway is tested against real llama.cpp servers without the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import math
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from llama_orchestrator.clock import Clock
from llama_orchestrator.gateway.app import Gateway
from llama_orchestrator.gateway.backend import Endpoint, StartResult
from llama_orchestrator.gateway.loop import new_event_loop
from llama_orchestrator.gateway.records import RequestRecord
from llama_orchestrator.gateway.settings import GatewaySettings

T = TypeVar("T")


def server_argv(
    binary: str | Path | None,
    model: Path,
    port: int,
    *,
    parallel: int = 1,
    ctx: int = 256,
    extra: Sequence[str] = (),
) -> list[str]:
    """A llama-server command line; ``binary`` None runs the embedded engine."""
    import sys

    head = (
        [sys.executable, "-m", "llama_orchestrator.engine.embedded"]
        if binary is None
        else [str(binary)]
    )
    return [
        *head, "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
        "-c", str(ctx), "-b", "64", "-t", "1", "-np", str(parallel), *extra,
    ]  # fmt: skip


def _health(port: int) -> int | None:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        c.request("GET", "/health")
        return c.getresponse().status
    except OSError:
        return None
    finally:
        c.close()


class ServerInstance:
    """A ``backend.Instance`` over one server process that this object starts and stops.

    ``ensure_started`` starts it (counted in ``starts``) and returns once ``/health``
    answers 200; ``healthy = False`` takes a running one out of the rotation.
    """

    def __init__(
        self,
        name: str,
        argv: list[str],
        port: int,
        *,
        aliases: tuple[str, ...] = (),
        on_demand: bool = False,
        slots: int = 1,
        context_size: int | None = 256,
        start_timeout: float = 60.0,
    ) -> None:
        self._name = name
        self.argv = argv
        self.port = port
        self._aliases = aliases
        self._on_demand = on_demand
        self._slots = slots
        self._context_size = context_size
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._state = "stopped"
        self.healthy = True
        self._in_flight = 0
        self._unloading = False
        self.kept_alive: int | None = None
        # What its answers' "model" says (None: not known, the gateway renames them all).
        self.answers_name: str | None = name
        self._last_error: str | None = None
        self.starts = 0
        self.leases = 0
        # False: a dead process still reads as running (a daemon that has not noticed).
        self.track_exit = True
        self._lock = threading.Lock()

    # -- backend.Instance ----------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def aliases(self) -> tuple[str, ...]:
        return self._aliases

    @property
    def on_demand(self) -> bool:
        return self._on_demand

    @property
    def slots(self) -> int:
        return self._slots

    @property
    def state(self) -> str:
        proc = self.proc
        if self._state == "running" and self.track_exit and proc and proc.poll() is not None:
            return "exited"
        return self._state

    @property
    def routable(self) -> bool:
        return self.state == "running" and self.healthy

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def last_error(self) -> str | None:
        return self._last_error

    @property
    def cutoff(self) -> float:
        return -math.inf if self._unloading else math.inf

    @property
    def context_size(self) -> int | None:
        return self._context_size

    def acquire(self) -> Endpoint | None:
        if not self.routable:
            return None
        with self._lock:
            self._in_flight += 1
            self.leases += 1
        return Endpoint(self._name, f"http://127.0.0.1:{self.port}")

    def release(self) -> None:
        with self._lock:
            self._in_flight -= 1
            assert self._in_flight >= 0, f"{self._name}: a lease released twice"

    @property
    def answers_as(self) -> str | None:
        return self.answers_name

    async def ensure_started(self) -> StartResult:
        self.starts += 1
        return await asyncio.get_running_loop().run_in_executor(None, self.start)

    def keep_alive(self, seconds: int) -> None:
        self.kept_alive = seconds  # what the last request asked for (no idle stop here)

    async def unload(self, reason: str) -> StartResult:
        self._unloading = True  # no new leases (cutoff) while the ones out finish
        try:
            while self._in_flight:
                await asyncio.sleep(0.01)
            await asyncio.get_running_loop().run_in_executor(None, self.stop)
        finally:
            self._unloading = False
        return StartResult(True, "stopped")

    # -- control -------------------------------------------------------------------------

    def start(self) -> StartResult:
        if self.routable:
            return StartResult(True, "ready")
        self._state = "starting"
        log = Path(os.environ.get("TMPDIR", "/tmp")) / f"gw-test-{self._name}-{self.port}.log"
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                self._last_error = f"exited with {self.proc.returncode}: " + " | ".join(tail)
                self._state = "fatal"
                return StartResult(False, self._last_error)
            if _health(self.port) == 200:
                self._state = "running"
                return StartResult(True, "ready")
            time.sleep(0.003)
        self.stop()
        self._state = "fatal"
        self._last_error = f"not ready within {self.start_timeout:g} s"
        return StartResult(False, self._last_error)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        self._state = "stopped"

    def kill(self) -> None:
        """SIGKILL, as a crash would (the state still says running until it is read)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


class ListDirectory:
    """A ``backend.Directory`` over a list the test may change."""

    def __init__(self, instances: Sequence[Any] = ()) -> None:
        self.items: list[Any] = list(instances)

    def instances(self) -> Sequence[Any]:
        return sorted(self.items, key=lambda i: i.name)

    def get(self, name: str) -> Any:
        return next((i for i in self.items if i.name == name), None)

    def broken(self, name: str) -> str | None:
        return None


class GatewayThread:
    """A ``Gateway`` on its own event loop in a background thread, for synchronous
    clients (the ``openai`` package) in the test's thread."""

    def __init__(
        self,
        directory: Any,
        settings: GatewaySettings | None = None,
        *,
        clock: Clock | None = None,
        uvloop: bool = True,
    ) -> None:
        self.records: list[RequestRecord] = []
        self._settings = settings or GatewaySettings(port=0)
        self._loop = new_event_loop(uvloop=uvloop)
        kwargs: dict[str, Any] = {"on_request": self.records.append}
        if clock is not None:
            kwargs["clock"] = clock
        self.gateway = Gateway(directory, self._settings, **kwargs)
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        try:
            self.run(self.gateway.start())
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
            raise
        self.url = self.gateway.url

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return fut.result(timeout)

    def call(self, fn: Callable[[], T], timeout: float = 10) -> T:
        """Run ``fn`` on the gateway's loop (where its state lives) and return its result."""

        async def go() -> T:
            return fn()

        return self.run(go(), timeout)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.run(self.gateway.close(), 15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> GatewayThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
