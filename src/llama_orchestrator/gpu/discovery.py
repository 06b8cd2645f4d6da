"""A backend's devices now, for placement (``gpu.device_id: "auto"``, issue 7): one
detection run (nvidia-smi, vulkaninfo, ... through ``detect.py``) gives every device of
the backend with its free memory. The daemon's scheduler takes the function as a
parameter, so tests place instances on devices they make up."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Detected:
    """A backend's devices: ``{device key: free MiB (None: not reported)}``, and what
    the detection tools said (for the sentence when there are none)."""

    free_mib: Mapping[str, int | None] = field(default_factory=dict)
    sources: str = ""


def discover(backend: str, reserve_mib: int = 0, binary: Sequence[str] = ()) -> Detected:
    """The backend's devices now, each with its free memory less ``reserve_mib``. It
    runs the detection tools (seconds at worst): call it in a thread.

    ``binary``: the argv prefix of the llama-server that will run. When it lists its
    devices, only those count, numbered as it numbers them (``-dev Vulkan1``): llama.cpp
    drops an integrated GPU beside a discrete one, which vulkaninfo still counts.
    """
    from llama_orchestrator.gpu import llama
    from llama_orchestrator.gpu.detect import detect

    found = detect(list(binary) or None)
    listed = bool(binary) and found.listed
    free: dict[str, int | None] = {}
    for d in found.devices:
        if d.backend == backend and (d.dev is not None or not listed):
            mib = None if d.free_mib is None else max(d.free_mib - reserve_mib, 0)
            free[f"{backend}:{d.index}"] = mib
    # no llama-server is asked (its list has no free memory): only the tools that were
    said = "; ".join(
        f"{n}: {r.text()}" for n, r in found.sources.items() if binary or n != llama.SOURCE
    )
    return Detected(free, said)


def no_device(backend: str, sources: str) -> str:
    """Why an ``auto`` instance cannot be placed: ``gpu.device_id``'s problem, one line."""
    seen = f" ({sources})" if sources else ""
    return (
        f"'auto' needs a {backend} device and none is detected on this machine{seen}; "
        f"set gpu.device_id to a device number, or gpu.backend to 'cpu'"
    )
