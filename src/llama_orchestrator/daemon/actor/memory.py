"""What a running instance really uses, per device (issue 18, "measured, not only
estimated").

Once its server is ready (and on re-adoption of a running one), the actor starts
:func:`watch_memory`: a side task that reads the process tree's memory
(``gpu/usage.py:measure``: host PSS, the GPU's per-process use) in a thread, at once and
then every :data:`MEASURE_EVERY_S` seconds, and posts each reading. The actor keeps the
current reading and the peak per device in a :class:`MemoryBook` and publishes them in its
snapshot; the scheduler counts the peak from then on (daemon/seats.py). A source that
fails (nvidia-smi missing, timing out, printing garbage) leaves the estimate in force, and
``unavailable`` says why.

Five seconds: a reading costs one nvidia-smi run (tens of milliseconds) and a
``/proc`` walk, so the cost is nothing next to a server's; and the growth worth catching
(a half-offloaded server's GPU use grew 116 MiB with its first long prompt, on an H200)
comes with requests that take seconds themselves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from llama_orchestrator.clock import Clock
from llama_orchestrator.daemon.actor.messages import MemoryRead, Report
from llama_orchestrator.gpu.overhead import MiB, peak
from llama_orchestrator.gpu.usage import Measured, Reading, Unavailable

MEASURE_EVERY_S = 5.0

Measure = Callable[[int, str, int], Mapping[str, Reading]]
# the actor context's ``offload`` (daemon/actor/context.py), for one result type
Offload = Callable[[Callable[[], dict[str, Reading]]], Awaitable[dict[str, Reading]]]


@dataclass(frozen=True)
class DeviceMemory:
    """One device of one run: the estimate (as admitted), the last reading, the peak."""

    estimate_mb: int | None = None
    measured_mb: int | None = None
    peak_mb: int | None = None
    source: str | None = None  # what measured it (host, nvidia-smi, ...)
    unavailable: str | None = None  # why the last reading failed (the estimate holds)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "estimate_mb": self.estimate_mb,
            "measured_mb": self.measured_mb,
            "peak_mb": self.peak_mb,
        }
        if self.source:
            out["source"] = self.source
        if self.unavailable:
            out["unavailable"] = self.unavailable
        return out


def _mb(n: int) -> int:
    return -(-n // MiB)


class MemoryBook:
    """The actor's readings of its current run (only the actor touches it)."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.devices: dict[str, DeviceMemory] = {}
        self.written: dict[str, dict[str, Any]] = {}  # what the state store holds

    def begin(self, pid: int | None, estimate_mb: Mapping[str, int]) -> None:
        """A run is watched from now: its estimate, no reading yet."""
        self.pid = pid
        self.devices = {d: DeviceMemory(estimate_mb=v) for d, v in estimate_mb.items()}

    def read(self, pid: int, readings: Mapping[str, Reading]) -> list[str]:
        """Take one reading of run ``pid``; returns the devices measured for the first
        time in this run (an event says so, and the overhead learns from them)."""
        if pid != self.pid:
            return []  # a reading of a run already let go
        first: list[str] = []
        for device, reading in readings.items():
            was = self.devices.get(device, DeviceMemory())
            if isinstance(reading, Measured):
                now = _mb(reading.bytes)
                if was.peak_mb is None:
                    first.append(device)
                self.devices[device] = DeviceMemory(
                    was.estimate_mb, now, peak(was.peak_mb, now), reading.source
                )
            else:
                self.devices[device] = DeviceMemory(
                    was.estimate_mb, None, was.peak_mb, reading.source, reading.reason
                )
        return first

    def view(self, pid: int | None) -> dict[str, DeviceMemory]:
        """What the snapshot shows: this run's devices (nothing once it is let go)."""
        return dict(self.devices) if pid is not None and pid == self.pid else {}


def gone(readings: Mapping[str, Reading]) -> bool:
    """The process is gone: no more readings to take."""
    host = readings.get("cpu")
    return isinstance(host, Unavailable) and host.source == "process"


def safe_measure(measure: Measure, pid: int, backend: str, index: int) -> dict[str, Reading]:
    """One reading; a source that raises (the real one never does, gpu/usage.py) is a
    failed reading of every device it was to read, so the estimate stays in force and
    ``describe`` says why, and the watch goes on."""
    try:
        return dict(measure(pid, backend, index))
    except Exception as e:
        why = f"{type(e).__name__}: {e}"
        keys = ["cpu"] + ([f"{backend}:{index}"] if backend != "cpu" else [])
        return {key: Unavailable("measure", why) for key in keys}


async def watch_memory(
    measure: Measure,
    offload: Offload,
    clock: Clock,
    pid: int,
    device: tuple[str, int],
    post: Callable[[Report], None],
) -> None:
    """The side task: read, post, wait; until the process is gone (or it is cancelled)."""
    backend, index = device
    while True:
        readings = await offload(lambda: safe_measure(measure, pid, backend, index))
        post(MemoryRead(pid, readings))
        if gone(readings):
            return
        await clock.sleep(MEASURE_EVERY_S)


def describe_first(device: str, memory: DeviceMemory, overhead_mb: int) -> str:
    """The event of a run's first reading on a device."""
    said = f"{device}: measured {memory.measured_mb} MiB"
    if memory.estimate_mb is not None and memory.measured_mb is not None:
        off = memory.measured_mb - memory.estimate_mb
        said += f" (estimate {memory.estimate_mb} MiB, {off:+d} MiB)"
    return f"{said}; per-process overhead there now {overhead_mb} MiB"
