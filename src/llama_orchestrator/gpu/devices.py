"""Compute devices, how several tools' views of them merge, and finding one by backend+index.

A :class:`Device` is one GPU as one backend numbers it: ``backend`` is lower case
(``vulkan``, ``cuda``, ``metal``, ``rocm``, ... as in ``gpu.backend``), ``index`` is that
backend's device number, and ``dev`` is the name llama-server's ``-dev`` takes
(``Vulkan1``) when the resolved llama-server lists the device itself. llama-server's list
is authoritative for ``dev``; the other tools enrich its devices (vendor, type, memory it
could not read) and add the devices it does not list, with ``dev`` left ``None``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from llama_orchestrator.errors import OrchestratorError

# llama.cpp's device-name prefix per backend (ggml_backend_dev_name: Vulkan0, CUDA0, MTL0...).
DEVICE_PREFIX = {
    "vulkan": "Vulkan",
    "cuda": "CUDA",
    "metal": "MTL",
    "rocm": "ROCm",
    "sycl": "SYCL",
    "opencl": "OpenCL",
    "cann": "CANN",
    "musa": "MUSA",
}
_BACKEND_OF_PREFIX = {prefix.lower(): backend for backend, prefix in DEVICE_PREFIX.items()}
_REF = re.compile(r"^\s*([A-Za-z]+)\s*[:#]?\s*(\d+)\s*$")
_NOISE = re.compile(r"\((?:R|TM|C)\)|\b(?:corporation|inc\.?|graphics)\b|[^a-z0-9]+", re.I)


class ParseError(OrchestratorError, ValueError):
    """A tool's output holds no device list (often it is an error message instead)."""


@dataclass(frozen=True)
class Device:
    backend: str
    index: int
    name: str
    total_mib: int | None = None
    free_mib: int | None = None
    dev: str | None = None
    vendor: str | None = None
    kind: str | None = None  # "discrete" | "integrated" | "virtual" | "other"
    sources: tuple[str, ...] = field(default=())

    @property
    def label(self) -> str:
        """``Vulkan1``: llama-server's name when it lists the device, else the expected one."""
        return self.dev or device_name(self.backend, self.index)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "index": self.index,
            "dev": self.dev,
            "name": self.name,
            "memory_total_mib": self.total_mib,
            "memory_free_mib": self.free_mib,
            "vendor": self.vendor,
            "type": self.kind,
            "sources": list(self.sources),
        }

    def summary(self) -> str:
        """``AMD Radeon RX 7900 XTX, 24560 MiB, 23000 MiB free``."""
        parts = [self.name]
        if self.total_mib is not None:
            parts.append(f"{self.total_mib} MiB")
        if self.free_mib is not None:
            parts.append(f"{self.free_mib} MiB free")
        return ", ".join(parts)


def device_name(backend: str, index: int) -> str:
    return f"{DEVICE_PREFIX.get(backend, backend)}{index}"


def backend_of_prefix(prefix: str) -> str:
    """``Vulkan`` -> ``vulkan``, ``MTL`` -> ``metal``; unknown prefixes are lower-cased."""
    return _BACKEND_OF_PREFIX.get(prefix.lower(), prefix.lower())


def parse_device_ref(text: str) -> tuple[str, int]:
    """``Vulkan1``, ``vulkan:1``, ``cuda 0``, ``MTL0`` -> ``(backend, index)``."""
    m = _REF.match(text)
    if m is None:
        raise ValueError(f"not a device name: {text!r} (expected e.g. Vulkan0, CUDA1, cuda:1)")
    return backend_of_prefix(m.group(1)), int(m.group(2))


def find_device(devices: Iterable[Device], backend: str, index: int) -> Device | None:
    """The device ``-dev <prefix><index>`` selects; a device llama-server lists wins."""
    matches = [d for d in devices if d.backend == backend and d.index == index]
    listed = [d for d in matches if d.dev is not None]
    return (listed or matches)[0] if matches else None


def _norm(name: str) -> str:
    return " ".join(_NOISE.sub(" ", name).lower().split())


def same_name(a: str, b: str) -> bool:
    """Do two tools' names denote one GPU? Ignores case, (R)/(TM), brackets, and either
    name being a part of the other (``AMD Radeon RX 7900 XTX (RADV NAVI31)``)."""
    na, nb = _norm(a), _norm(b)
    if not na or not nb:
        return False
    return na == nb or f" {na} " in f" {nb} " or f" {nb} " in f" {na} "


def _enrich(base: Device, extra: Device) -> Device:
    return replace(
        base,
        total_mib=base.total_mib if base.total_mib is not None else extra.total_mib,
        free_mib=base.free_mib if base.free_mib is not None else extra.free_mib,
        vendor=base.vendor or extra.vendor,
        kind=base.kind or extra.kind,
        sources=base.sources + tuple(s for s in extra.sources if s not in base.sources),
    )


def _pair(pool: Sequence[Device], found: Sequence[Device]) -> dict[int, int]:
    """``found`` index -> ``pool`` index, same backend only: by name first, then for the
    rest by index (tools can name one GPU differently: rocm-smi says ``Navi 31 [...]``)."""
    pairs: dict[int, int] = {}
    for by_name in (True, False):
        for j, device in enumerate(found):
            if j in pairs:
                continue
            for i, d in enumerate(pool):
                if i in pairs.values() or d.backend != device.backend:
                    continue
                if same_name(d.name, device.name) if by_name else d.index == device.index:
                    pairs[j] = i
                    break
    return pairs


def merge(primary: Sequence[Device], others: Iterable[Sequence[Device]]) -> list[Device]:
    """llama-server's devices first, enriched by the other tools' matching devices; the
    devices only other tools see follow, one entry per backend that can reach them."""
    pool = list(primary)
    for found in others:
        pairs = _pair(pool, found)
        for j, device in enumerate(found):
            if j in pairs:
                pool[pairs[j]] = _enrich(pool[pairs[j]], device)
        pool += [d for j, d in enumerate(found) if j not in pairs]
    return pool
