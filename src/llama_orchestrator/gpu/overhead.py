"""Per-process memory overhead, learnt from measurements, and what an instance counts for
against a budget (issue 18, "the scheduler decides on the truth").

Pure functions over byte counts; the daemon keeps the samples (in its state database, so
they survive restarts) and calls these.

**The overhead** is what a server process uses on a device beyond ``fit``'s estimate
(weights, KV cache, compute buffer): on a GPU the runtime's context and the math
libraries' workspaces, which every process carries again. Until a device has a
measurement, :data:`DEFAULT_OVERHEAD_MIB` holds, per backend:

- ``cuda`` 600 MiB: measured on an NVIDIA H200 (CUDA 13, llama.cpp with cuBLAS): 592,
  592 and 591 MiB over the estimate for the three all-layer configs of two models, 517
  for the half-offloaded one (``tests/fixtures/h200``); it is the CUDA context plus
  cuBLAS's workspace, so it hardly depends on the model.
- ``rocm`` 600 MiB: HIP carries the same two parts (context, hipBLAS/rocBLAS workspace);
  not measured yet, so the CUDA figure stands in.
- ``vulkan`` 600 MiB, ``metal`` 600 MiB: not measured either. A default too high only
  delays a start that would have fitted, until the first measurement replaces it; one too
  low lets a load fail out of memory. So every unmeasured backend takes the largest
  figure measured.
- ``cpu`` 128 MiB: host memory of one server process beyond the estimate: llama-server's
  own libraries and threads (about 15 MiB PSS for the tiny model) up to the embedded
  engine's Python interpreter and wheel (about 110 MiB) (``bench/bench_memory.py``).
- ``cpu/<backend>`` 300 MiB (:data:`HOST_OF_GPU_MIB`): the host side of a GPU process is a
  population of its own: the GPU runtime's host allocations, pinned staging buffers and
  its libraries come on top of what a CPU process carries. On the H200 a CUDA process's
  PSS was 180-270 MiB above its host estimate; the default takes the largest, rounded up.
  :func:`overhead_key` names the key a device's overhead is learnt and counted under.

**Learnt**: the median of ``measured - estimated`` over the last :data:`WINDOW` instances
that ran on the device, never below zero (an estimate that proved high is not discounted:
the counted figure would drop below a guess nothing has proven low yet). The median keeps
one odd run (a load cut short, a server that grew its pool during a long prompt) from
moving the figure.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence

MiB = 2**20
WINDOW = 8
DEFAULT_OVERHEAD_MIB: dict[str, int] = {
    "cuda": 600,
    "rocm": 600,
    "vulkan": 600,
    "metal": 600,
    "cpu": 128,
}


HOST_OF_GPU_MIB = 300


def backend_of(device: str) -> str:
    """``cuda:0`` -> ``cuda``; ``cpu`` -> ``cpu``."""
    return device.split(":", 1)[0]


def overhead_key(device: str, devices: Iterable[str]) -> str:
    """The key ``device``'s overhead is learnt and counted under, for a process that uses
    ``devices``: the host (``cpu``) of a process that also runs on a GPU is
    ``cpu/<backend>`` (the GPU runtime's host side), every other device is itself."""
    if device != "cpu":
        return device
    gpus = sorted({backend_of(d) for d in devices} - {"cpu"})
    return f"cpu/{gpus[0]}" if gpus else "cpu"


def default_overhead(backend: str) -> int:
    """Bytes: the documented default for ``backend`` (``cpu/<gpu backend>``: the host side
    of a GPU process; an unknown one: the largest)."""
    if backend.startswith("cpu/"):
        return HOST_OF_GPU_MIB * MiB
    mib = DEFAULT_OVERHEAD_MIB.get(backend, max(DEFAULT_OVERHEAD_MIB.values()))
    return mib * MiB


def learnt_overhead(gaps: Sequence[int], default: int, window: int = WINDOW) -> int:
    """Bytes: the median of the last ``window`` gaps (``measured - estimate``, oldest
    first), never below 0; ``default`` until there is one."""
    recent = list(gaps)[-window:] if window > 0 else []
    if not recent:
        return default
    return max(int(statistics.median(recent)), 0)


def gap(estimate: int, measured: int) -> int:
    """One sample for :func:`learnt_overhead`: what the measurement holds beyond the estimate."""
    return measured - estimate


def counted_bytes(
    estimate: int, measured_peak: int | None, overhead: int, *, loading: bool = False
) -> int:
    """What an admitted instance counts for on one device.

    - no measurement yet: ``estimate + overhead``;
    - still loading: at least ``estimate + overhead`` (a reading taken while the weights
      are being copied is not yet the whole), more when the reading already is;
    - loaded: its measured peak, the highest reading seen (so never less than a
      measurement already seen), whether above or below the estimate.
    """
    guess = estimate + overhead
    if measured_peak is None:
        return guess
    if loading:
        return max(guess, measured_peak)
    return measured_peak


def peak(previous: int | None, reading: int | None) -> int | None:
    """The running peak after one more reading (None readings leave it unchanged)."""
    if reading is None:
        return previous
    return reading if previous is None else max(previous, reading)
