"""What a server's process tree really uses, per device (issue 18, "measured, not only
estimated").

:func:`measure` answers ``{device key: Measured | Unavailable}`` for one server PID: the
host (``cpu``) always, and the instance's GPU when it has one. Every source is bounded
(each tool runs with a timeout of :data:`TIMEOUT` seconds) and never raises: a missing
tool, a timeout, garbage output or a process that is gone all give
``Unavailable(source, reason)``, and the caller keeps its estimate. It blocks (it runs
tools and reads ``/proc``): the daemon calls it in a thread (``asyncio.to_thread``).

**Host: proportional set size (PSS)** of every process of the tree, from
``/proc/PID/smaps_rollup``. A model that llama.cpp mmaps lives in the page cache: its
pages are file-backed and shared by every process that maps the file. RSS counts them
whole in each process, so two instances of one model count it twice; RSS without the
file pages (``rss - shared``) does not count it at all, though a CPU instance reads every
weight from those pages on each token. PSS splits each shared page among the processes
that map it, so a sum over instances counts a shared model once, which is what a
budget sums. Measured with ``bench/bench_memory.py`` (2-core x86 VM): an embedded
Gemma 3 270M server alone reads PSS 380 MiB (estimate 328; RSS 387, of which 249 file-backed,
the model's pages most of it), two at once 509 MiB together where their RSS add up to 773. PSS
over-counts in one case: when llama.cpp repacks weights into anonymous buffers (``AMX``
or ``CPU_REPACK`` on x86, ARM), the file pages they were copied from stay mapped until
the kernel reclaims them, so the reading holds the weights twice: llama-server with a
173 MiB f16 model on an AMX CPU reads PSS 406 MiB = 243 anonymous (the estimate: 264) +
163 of stale file pages. Those pages are clean and reclaimable: the error is on the side
of refusing a start, never of running out of memory. ``detail`` keeps the
anonymous and file-backed parts apart so the two cases can be told. Outside Linux the
host reading is psutil's RSS. On macOS the ``phys_footprint`` that ``footprint PID``
prints (what Activity Monitor shows) would also hold the Metal buffers of Apple
silicon's unified memory; it is not read yet.

**GPUs**: NVIDIA from ``nvidia-smi --query-compute-apps`` (per process, summed over the
tree); AMD from ``rocm-smi --showpids`` (compute/KFD processes: llama.cpp's HIP backend)
and, on Linux, from the kernel's DRM fdinfo (per process device memory of any DRM
client: amdgpu or Intel under the Vulkan backend). Vulkan itself has no per-process query:
``VK_EXT_memory_budget`` gives a device-wide heap usage and budget only. Metal: Apple
silicon shares system memory; ``MTLDevice.recommendedMaxWorkingSetSize`` is a device
limit, and a process's GPU allocations are in its footprint: the host reading covers it.

**Which GPU**: nvidia-smi numbers GPUs in PCI bus order, CUDA (and llama-server's
``CUDA<n>``, the project's ``cuda:<n>``) fastest first unless ``CUDA_DEVICE_ORDER=
PCI_BUS_ID``, and ``CUDA_VISIBLE_DEVICES`` renumbers them again. So a tree found on one GPU
counts against the instance's own device key (the ``-dev`` it was started with chose that
GPU); a tree found on several (a split model) is keyed by nvidia-smi's index, with the
reason in ``detail``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from llama_orchestrator.gpu import apps
from llama_orchestrator.gpu.devices import ParseError
from llama_orchestrator.gpu.run import ToolFailed, ToolMissing, ToolOutput, run_tool

TIMEOUT = 2.0
NVIDIA_APPS = [
    "nvidia-smi",
    "--query-compute-apps=pid,used_memory,gpu_uuid",
    "--format=csv,noheader,nounits",
]
NVIDIA_UUIDS = ["nvidia-smi", "--query-gpu=index,uuid", "--format=csv,noheader"]
ROCM_PIDS = ["rocm-smi", "--showpids"]

Runner = Callable[[list[str], float], ToolOutput]


@dataclass(frozen=True)
class Measured:
    """Bytes the tree uses on one device, the processes counted, and a breakdown."""

    source: str
    bytes: int
    pids: tuple[int, ...]
    detail: Mapping[str, int | str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {"source": self.source, "bytes": self.bytes, "pids": list(self.pids),
                **dict(self.detail)}  # fmt: skip


@dataclass(frozen=True)
class Unavailable:
    """No reading from ``source``; ``reason`` says why in a few words."""

    source: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source} unavailable: {self.reason}"

    def to_dict(self) -> dict[str, object]:
        return {"source": self.source, "unavailable": self.reason}


Reading = Measured | Unavailable


def process_tree(pid: int) -> list[int] | Unavailable:
    """``pid`` and its descendants (a wrapper's server, a server's helpers)."""
    try:
        root = psutil.Process(pid)
        return [pid] + [p.pid for p in root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return Unavailable("process", f"process {pid} has exited")
    except psutil.Error as e:
        return Unavailable("process", f"cannot list process {pid}'s children: {e}")


_ROLLUP_KEYS = {"Pss": "pss", "Pss_Anon": "anon", "Pss_File": "file", "Pss_Shmem": "shmem",
                "Rss": "rss", "SwapPss": "swap"}  # fmt: skip


def _rollup(pid: int, proc: Path) -> dict[str, int]:
    """``/proc/PID/smaps_rollup`` (Linux 4.14+) in bytes, under :data:`_ROLLUP_KEYS`."""
    found: dict[str, int] = {}
    for line in (proc / str(pid) / "smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        name = _ROLLUP_KEYS.get(key.strip())
        words = rest.split()
        if name and words and words[0].isdigit():
            found[name] = int(words[0]) * 1024  # the file is in kB
    if "pss" not in found:
        raise ValueError("no Pss line")
    return found


def host_usage(pid: int, proc: Path = Path("/proc")) -> Reading:
    """The tree's PSS (Linux; see the module docstring) or RSS (elsewhere)."""
    tree = process_tree(pid)
    if isinstance(tree, Unavailable):
        return tree
    totals: dict[str, int] = {}
    counted: list[int] = []
    linux = sys.platform.startswith("linux") and (proc / "self" / "smaps_rollup").exists()
    for p in tree:
        try:
            parts = _rollup(p, proc) if linux else {"rss": psutil.Process(p).memory_info().rss}
        except (OSError, ValueError, psutil.NoSuchProcess):
            continue  # a child that exited between the listing and the read
        except psutil.Error as e:
            return Unavailable("host", f"cannot read process {p}'s memory: {e}")
        counted.append(p)
        for k, v in parts.items():
            totals[k] = totals.get(k, 0) + v
    if not counted:
        return Unavailable("host", f"process {pid} has exited")
    measure = "pss" if linux else "rss"
    detail: dict[str, int | str] = {"measure": measure}
    detail.update({k: v for k, v in totals.items() if k != measure})
    return Measured("host", totals[measure], tuple(counted), detail)


def _run(argv: list[str], runner: Runner) -> str | Unavailable:
    """The tool's stdout, or why there is none (never raises)."""
    source = argv[0]
    try:
        out = runner(argv, TIMEOUT)
    except ToolMissing:
        return Unavailable(source, "not installed")
    except ToolFailed as e:
        return Unavailable(source, str(e))
    except Exception as e:  # a source must never take the caller down
        return Unavailable(source, f"{type(e).__name__}: {e}")
    if out.returncode != 0:
        return Unavailable(source, out.reason())
    return out.stdout


def _sum(rows: list[apps.ProcessMemory], tree: list[int], source: str) -> Reading | None:
    """The tree's rows summed; None when no process of the tree is listed."""
    mine = [r for r in rows if r.pid in tree]
    if not mine:
        return None
    if any(r.bytes is None for r in mine):
        return Unavailable(source, "the driver does not report per-process memory (N/A)")
    pids = tuple(sorted({r.pid for r in mine}))
    return Measured(source, sum(r.bytes or 0 for r in mine), pids)


def nvidia_usage(pid: int, device: str, runner: Runner = run_tool) -> dict[str, Reading]:
    """``{device key: reading}``: ``device`` (``cuda:0``) when the tree is on one GPU."""
    tree = process_tree(pid)
    if isinstance(tree, Unavailable):
        return {device: tree}
    out = _run(NVIDIA_APPS, runner)
    if isinstance(out, Unavailable):
        return {device: out}
    try:
        rows = [r for r in apps.parse_compute_apps(out) if r.pid in tree]
    except ParseError as e:
        return {device: Unavailable("nvidia-smi", f"unexpected output: {e}")}
    gpus = {r.gpu for r in rows}
    if len(gpus) <= 1:
        found = _sum(rows, tree, "nvidia-smi")
        if found is None:
            # Containers see their own PIDs, nvidia-smi the host's: nothing matches.
            why = f"no process of the tree ({', '.join(map(str, tree[:4]))}) is listed"
            return {device: Unavailable("nvidia-smi", why)}
        return {device: found}
    index = _run(NVIDIA_UUIDS, runner)
    try:
        order = apps.parse_gpu_uuids(index) if isinstance(index, str) else {}
    except ParseError:
        order = {}
    backend = device.split(":")[0]
    result: dict[str, Reading] = {}
    for gpu in sorted(g or "" for g in gpus):
        key = f"{backend}:{order[gpu]}" if gpu in order else f"{backend}:{gpu}"
        part = _sum([r for r in rows if (r.gpu or "") == gpu], tree, "nvidia-smi")
        if isinstance(part, Measured):
            part = Measured(part.source, part.bytes, part.pids,
                            {"numbering": "nvidia-smi (PCI bus order)"})  # fmt: skip
        if part is not None:
            result[key] = part
    return result


def rocm_usage(pid: int, device: str, runner: Runner = run_tool) -> Reading:
    """The tree's VRAM from ``rocm-smi --showpids`` (a process on one GPU only)."""
    tree = process_tree(pid)
    if isinstance(tree, Unavailable):
        return tree
    out = _run(ROCM_PIDS, runner)
    if isinstance(out, Unavailable):
        return out
    try:
        rows = [r for r in apps.parse_showpids(out) if r.pid in tree]
    except ParseError as e:
        return Unavailable("rocm-smi", f"unexpected output: {e}")
    if any(r.gpu not in (None, "1") for r in rows):
        return Unavailable("rocm-smi", "the process uses several GPUs; --showpids sums them")
    found = _sum(rows, tree, "rocm-smi")
    return found or Unavailable("rocm-smi", "no process of the tree is a KFD (compute) client")


def drm_usage(pid: int, proc: Path = Path("/proc")) -> Reading:
    """Device-local memory of the tree's DRM clients (Linux fdinfo; Vulkan on amdgpu, xe)."""
    tree = process_tree(pid)
    if isinstance(tree, Unavailable):
        return tree
    rows: list[apps.ProcessMemory] = []
    for p in tree:
        texts = []
        try:
            for fd in (proc / str(p) / "fdinfo").iterdir():
                try:
                    texts.append(fd.read_text())
                except OSError:
                    continue
        except OSError as e:
            return Unavailable("drm-fdinfo", f"cannot read {proc / str(p) / 'fdinfo'}: {e}")
        rows += apps.parse_drm_fdinfo(texts, p)
    if not rows:
        return Unavailable("drm-fdinfo", "no DRM client with device memory stats in the tree")
    return Measured("drm-fdinfo", sum(r.bytes or 0 for r in rows),
                    tuple(sorted({r.pid for r in rows})))  # fmt: skip


def gpu_usage(pid: int, backend: str, device: str, runner: Runner = run_tool) -> dict[str, Reading]:
    """The GPU reading for an instance on ``backend``'s ``device`` key."""
    if backend == "cuda":
        return nvidia_usage(pid, device, runner)
    if backend == "rocm":
        return {device: rocm_usage(pid, device, runner)}
    if backend == "vulkan" and sys.platform.startswith("linux"):
        return {device: drm_usage(pid)}
    if backend == "metal":
        return {device: Unavailable("metal", "unified memory: counted in the host reading")}
    why = "no per-process query (VK_EXT_memory_budget is device-wide)"
    return {device: Unavailable(backend, why if backend == "vulkan" else "no source")}


def measure(
    pid: int, backend: str = "cpu", device_id: int = 0, runner: Runner = run_tool
) -> dict[str, Reading]:
    """``{"cpu": host reading, "<backend>:<id>": GPU reading}`` for a server's PID.

    Blocking, bounded by :data:`TIMEOUT` per tool; never raises.
    """
    result: dict[str, Reading] = {}
    try:
        result["cpu"] = host_usage(pid)
    except Exception as e:  # defensive: a reading must never raise into the daemon
        result["cpu"] = Unavailable("host", f"{type(e).__name__}: {e}")
    if backend != "cpu":
        key = f"{backend}:{device_id}"
        try:
            result.update(gpu_usage(pid, backend, key, runner))
        except Exception as e:
            result[key] = Unavailable(backend, f"{type(e).__name__}: {e}")
    return result
