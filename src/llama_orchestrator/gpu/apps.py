"""Per-process GPU memory as the vendor tools print it: parsers only (issue 18).

Each parser turns one tool's output into :class:`ProcessMemory` rows and raises
:class:`ParseError` on output that is not what the tool documents (an error message, a
truncated table): the caller (``gpu/usage.py``) turns that into an "unavailable" reading.

- **NVIDIA**: ``nvidia-smi --query-compute-apps=pid,used_memory,gpu_uuid
  --format=csv,noheader,nounits``: ``5516, 2664, GPU-7f3c...`` (MiB). Without ``nounits``
  the memory reads ``2664 MiB``; ``pid,used_memory`` alone is accepted too (the H200
  recordings hold that). Under the Windows WDDM driver ``used_memory`` is ``[N/A]``.
  With no compute process the output is empty. ``--query-gpu=index,uuid`` maps the UUIDs
  to nvidia-smi's indices (:func:`parse_gpu_uuids`).
- **AMD (ROCm)**: ``rocm-smi --showpids``: a ``KFD process information:`` table with
  ``PID  PROCESS NAME  GPU(s)  VRAM USED  SDMA USED  CU OCCUPANCY`` where ``GPU(s)`` is how
  many GPUs the process uses (a count, not an index) and ``VRAM USED`` is bytes over all
  of them; ``No KFD PIDs currently running`` when there is none. Only compute (KFD)
  clients are listed: a Vulkan process on the same GPU is not.
- **Linux DRM fdinfo** (amdgpu, i915/xe, ... for Vulkan and OpenGL clients): each open DRM
  file of a process has ``/proc/PID/fdinfo/FD`` with ``drm-client-id: 7`` and
  ``drm-memory-vram: 1024 KiB`` (older kernels) or ``drm-resident-vram0`` / ``drm-total-
  local0`` (newer ones); the kernel documents the keys in ``drm-usage-stats.rst``. One
  client id can appear under several fds (dup), so it is counted once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from llama_orchestrator.gpu.devices import ParseError

MiB = 2**20
_UNITS = {"kib": 2**10, "kb": 2**10, "mib": MiB, "mb": MiB, "gib": 2**30, "gb": 2**30, "b": 1}
_AMOUNT = re.compile(r"^\s*(\d+)\s*([A-Za-z]*)\s*$")
_NOT_AVAILABLE = {
    "[n/a]",
    "n/a",
    "[not supported]",
    "[unknown error]",
    "[insufficient permissions]",
}


@dataclass(frozen=True)
class ProcessMemory:
    """One process's memory on one GPU (``gpu`` is a UUID, an index or ``None`` when the
    tool does not say which GPU); ``bytes`` is ``None`` when the tool cannot report it."""

    pid: int
    bytes: int | None
    gpu: str | None = None


def _amount(text: str, default_unit: int) -> int | None:
    """``2664`` (in ``default_unit``), ``2664 MiB``, ``1024 KiB`` -> bytes; None for N/A."""
    value = text.strip()
    if value.lower() in _NOT_AVAILABLE:
        return None
    m = _AMOUNT.match(value)
    if m is None:
        raise ParseError(f"not an amount of memory: {value!r}")
    unit = m.group(2).lower()
    if unit and unit not in _UNITS:
        raise ParseError(f"unknown unit in {value!r}")
    return int(m.group(1)) * (_UNITS[unit] if unit else default_unit)


def parse_compute_apps(output: str) -> list[ProcessMemory]:
    """``nvidia-smi --query-compute-apps=pid,used_memory[,gpu_uuid] --format=csv,noheader``."""
    rows = []
    for line in output.splitlines():
        if not line.strip():
            continue
        if line.strip().lower().startswith("no running processes"):
            return []
        fields = [f.strip() for f in line.split(",")]
        if len(fields) not in (2, 3) or not fields[0].isdigit():
            raise ParseError(line.strip()[:200])
        gpu = fields[2] if len(fields) == 3 and fields[2] else None
        rows.append(ProcessMemory(int(fields[0]), _amount(fields[1], MiB), gpu))
    return rows


def parse_gpu_uuids(output: str) -> dict[str, int]:
    """``nvidia-smi --query-gpu=index,uuid --format=csv,noheader`` -> ``{uuid: index}``."""
    found: dict[str, int] = {}
    for line in output.splitlines():
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 2 or not fields[0].isdigit():
            raise ParseError(line.strip()[:200])
        found[fields[1]] = int(fields[0])
    return found


_KFD_HEADER = re.compile(r"^\s*PID\s+PROCESS NAME\s+GPU", re.I)


def parse_showpids(output: str) -> list[ProcessMemory]:
    """``rocm-smi --showpids``: one row per KFD process; ``gpu`` is the count of GPUs it
    uses (``"1"``), since the table names no index."""
    lines = output.splitlines()
    if any("no kfd pids currently running" in line.lower() for line in lines):
        return []
    start = next((i for i, line in enumerate(lines) if _KFD_HEADER.match(line)), None)
    if start is None:
        errors = [line.strip() for line in lines if "error" in line.lower()]
        raise ParseError(errors[-1] if errors else "no KFD process table in the output")
    rows = []
    for line in lines[start + 1 :]:
        text = line.strip()
        if not text or text.startswith("="):
            break
        fields = text.split()
        # PID, a process name (may hold spaces), then four numeric-or-UNKNOWN columns
        if len(fields) < 6 or not fields[0].isdigit():
            raise ParseError(text[:200])
        gpus, vram = fields[-4], fields[-3]
        used = int(vram) if vram.isdigit() else None
        rows.append(ProcessMemory(int(fields[0]), used, gpus if gpus.isdigit() else None))
    return rows


_DRM_KEY = re.compile(r"^drm-(?:memory|resident)-(vram\d*|local\d*)$")


def parse_drm_fdinfo(texts: Iterable[str], pid: int) -> list[ProcessMemory]:
    """The ``/proc/PID/fdinfo/*`` texts of one process -> one row per DRM client, with
    its device-local memory (``vram`` on amdgpu, ``local`` on xe); the ``gpu`` is the
    client's ``drm-pdev`` (PCI address) when given. Non-DRM fds are skipped."""
    clients: dict[tuple[str, str], int] = {}
    for text in texts:
        fields: dict[str, str] = {}
        for line in text.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        client = fields.get("drm-client-id")
        if client is None:
            continue
        regions: dict[str, int] = {}
        for key, value in fields.items():
            m = _DRM_KEY.match(key)
            if m:  # newer kernels print the legacy drm-memory- key beside drm-resident-
                regions[m.group(1)] = max(regions.get(m.group(1), 0), _amount(value, 1) or 0)
        local = sum(regions.values())
        where = fields.get("drm-pdev", "")
        clients[(where, client)] = max(clients.get((where, client), 0), local)
    return [ProcessMemory(pid, used, where or None) for (where, _), used in clients.items()]
