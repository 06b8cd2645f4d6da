"""Placement across GPUs: ``gpu.device_id: "auto"`` (issue 7).

An instance set to ``auto`` asks the scheduler for ``<backend>:auto`` (its estimate on
"some device of this backend"). At each start, before admission, the scheduler turns
that into one device of the backend (daemon/scheduler.py ``_place``), by this rule:

- the candidates are the backend's devices detected now (``Detected``: nvidia-smi,
  vulkaninfo, ... through ``gpu/detect.py``; injected in tests);
- each has a free budget: its ``memory_budget_mb`` (gateway.json's, else the default the
  scheduler learns from its free memory) less what the instances admitted there count
  for (measured peak, else estimate plus the device's learnt overhead) and less the
  starts already waiting for it;
- the instance goes to the device with the most free budget among those it fits on;
  ties go to the lowest id;
- when it fits on none, it goes to the device where stopping every instance that may be
  evicted would leave the most room, if that is enough, and the usual rules (wait for
  busy victims, evict idle ones) apply there; when even that is not enough anywhere, to
  the device with the most free budget, where the start is refused as it would be for a
  pinned device (naming what is missing).

A device with neither a budget nor a free-memory reading has no known free budget: it
is taken only when no device's free budget is known (lowest id first).

The device it got is what the seat counts, what the launch passes (``-dev``/
``CUDA_VISIBLE_DEVICES``), and what the snapshot, ``ps``, ``describe`` and the
``placed`` event show. A pinned ``device_id`` is never placed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from llama_orchestrator.daemon.budget import Budget, Seat
from llama_orchestrator.gpu.discovery import Detected, discover, no_device

__all__ = ["Detected", "no_device"]  # the scheduler's and the actor's, from one place

if TYPE_CHECKING:
    from llama_orchestrator.config.loader import LoadedConfig

AUTO_SUFFIX = ":auto"


@dataclass(frozen=True)
class Candidate:
    key: str  # "cuda:1"
    free_mib: int | None  # budget left there now (None: no budget and no reading)
    limit_mib: int | None  # its budget
    room_mib: int | None = None  # free once every evictable instance there has stopped


@dataclass(frozen=True)
class Placement:
    device: str  # the device key chosen
    sentence: str  # "placed on cuda:1 (most free: 61.2 GiB of 80.0 GiB)"


def auto_backend(memory_mb: Mapping[str, int]) -> str | None:
    """The backend of a claim that waits to be placed (its ``<backend>:auto`` key)."""
    for key in memory_mb:
        if key.endswith(AUTO_SUFFIX):
            return key[: -len(AUTO_SUFFIX)]
    return None


def resolved(memory_mb: Mapping[str, int], device: str) -> dict[str, int]:
    """A claim's memory with its ``<backend>:auto`` key replaced by ``device``."""
    return {(device if k.endswith(AUTO_SUFFIX) else k): v for k, v in memory_mb.items()}


def index_of(key: str) -> int:
    """``cuda:1`` -> 1."""
    return int(key.rsplit(":", 1)[1])


def label_index(label: str | None) -> int | None:
    """The device number of a recorded ``ps`` label (``GPU:1`` -> 1), None for ``-``."""
    if label and label.startswith("GPU:") and label[4:].isdigit():
        return int(label[4:])
    return None


def gib(mib: int) -> str:
    return f"{mib / 1024:.1f} GiB"


def _of(c: Candidate) -> str:
    return f"{gib(c.free_mib or 0)} of {gib(c.limit_mib)}" if c.limit_mib else gib(0)


def candidates(keys: Sequence[str], budget: Budget, seats: Sequence[Seat]) -> list[Candidate]:
    """Each device's free budget beside ``seats`` (the instances admitted and the starts
    waiting, each counted as the scheduler counts it), and its room once every unpinned
    one there has stopped."""
    out: list[Candidate] = []
    for key in keys:
        limit = budget.memory_mb.get(key)
        if limit is None:
            out.append(Candidate(key, None, None))
            continue
        used = sum(s.memory_mb.get(key, 0) for s in seats)
        held = sum(s.memory_mb.get(key, 0) for s in seats if s.pinned)
        out.append(Candidate(key, max(limit - used, 0), limit, max(limit - held, 0)))
    return out


def place(backend: str, candidates: Sequence[Candidate], need: Mapping[str, int]) -> Placement:
    """The device for a start needing ``need[key]`` MiB on device ``key`` (estimate plus
    that device's overhead), by the rule in the module docstring. ``candidates`` is not
    empty."""
    ordered = sorted(candidates, key=lambda c: index_of(c.key))
    known = [c for c in ordered if c.free_mib is not None]
    if not known:
        first = ordered[0]
        return Placement(
            first.key,
            f"placed on {first.key} (no budget or free memory known for its {backend} "
            "devices: the lowest id)",
        )
    fits = [c for c in known if (c.free_mib or 0) >= need.get(c.key, 0)]
    if fits:
        best = max(fits, key=lambda c: (c.free_mib or 0, -index_of(c.key)))
        return Placement(best.key, f"placed on {best.key} (most free: {_of(best)})")
    most = max(known, key=lambda c: (c.free_mib or 0, -index_of(c.key)))
    short = f"it needs {gib(need.get(most.key, 0))}; most free: {_of(most)} on {most.key}"
    roomy = [c for c in known if (c.room_mib or 0) >= need.get(c.key, 0)]
    if roomy:
        best = max(roomy, key=lambda c: (c.room_mib or 0, -index_of(c.key)))
        return Placement(
            best.key,
            f"placed on {best.key}: no {backend} device has room now ({short}); "
            f"evicting there makes the most room ({gib(best.room_mib or 0)})",
        )
    return Placement(most.key, f"placed on {most.key}: no {backend} device can hold it ({short})")


def placed_config(loaded: LoadedConfig, device_id: int) -> LoadedConfig:
    """``loaded`` with ``gpu.device_id`` set to ``device_id`` (an ``auto`` one placed);
    the file's hash stays the file's."""
    config = loaded.config.model_copy(update={"gpu": loaded.config.gpu.placed(device_id)})
    return replace(loaded, config=config)


def measured_device(loaded: LoadedConfig | None, claimed: Mapping[str, int]) -> tuple[str, int]:
    """The device a run's memory is read on: its GPU when layers are offloaded (an
    ``auto`` one's from the device its claim was placed on), else the host."""
    gpu = loaded.config.gpu if loaded is not None else None
    if gpu is None or gpu.layers == 0 or gpu.backend == "cpu":
        return "cpu", 0
    if not gpu.auto:
        return gpu.backend, int(gpu.device_id)
    prefix = gpu.backend + ":"
    placed = [k for k in claimed if k.startswith(prefix) and not k.endswith(AUTO_SUFFIX)]
    return gpu.backend, index_of(placed[0]) if placed else 0


def detected_devices(backend: str, binary: Sequence[str] = ()) -> Detected:
    """The backend's devices now as ``binary`` (the llama-server that will run) numbers
    them, with their free memory less the reserve ``fit`` keeps (the figure the
    scheduler learns budgets from, daemon/seats.py). It runs the detection tools: call
    it in a thread."""
    from llama_orchestrator.models.fit import DEFAULT_RESERVE_MB

    return discover(backend, DEFAULT_RESERVE_MB, binary)
