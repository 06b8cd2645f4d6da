"""What ``llama-orch stats`` measures: per running instance, its process tree's CPU and
memory (psutil), its GPU memory (``nvidia-smi``, where present) and its load through the
gateway (the daemon's ``GET /v1/gateway``).

A sampler keeps its psutil handles between samples, since a CPU percentage is the CPU
time used between two looks at one process. Each sample re-reads the records, so a
restarted server (a new PID) or a newly started instance shows up at the next refresh.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from typing import Any

import psutil

from llama_orchestrator.home import Home
from llama_orchestrator.state import memory as recorded_memory
from llama_orchestrator.state.records import InstanceRecord

MIB = 1024 * 1024
NVIDIA_SMI_TIMEOUT_S = 5.0

Gateway = Callable[[], dict[str, Any] | None]
Vram = Callable[[], dict[int, int] | None]


def parse_compute_apps(text: str) -> dict[int, int]:
    """pid -> bytes from ``nvidia-smi --query-compute-apps=pid,used_memory
    --format=csv,noheader,nounits`` (MiB per line; a process on two GPUs is listed twice)."""
    used: dict[int, int] = {}
    for line in text.splitlines():
        pid_s, sep, mib_s = line.partition(",")
        try:
            pid, mib = int(pid_s.strip()), int(mib_s.strip())
        except ValueError:
            continue  # a blank line, "[N/A]" (no figure for this process), a header
        if sep:
            used[pid] = used.get(pid, 0) + mib * MIB
    return used


class NvidiaSmi:
    """GPU memory per process from nvidia-smi; None when it is missing or fails."""

    def __init__(self, which: Callable[[str], str | None] = shutil.which) -> None:
        self.path = which("nvidia-smi")

    def __call__(self) -> dict[int, int] | None:
        if self.path is None:
            return None
        try:
            done = subprocess.run(
                [
                    self.path,
                    "--query-compute-apps=pid,used_memory",
                    "--format=csv,noheader,nounits",
                ],
                capture_output=True,
                text=True,
                timeout=NVIDIA_SMI_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        if done.returncode != 0:
            return None
        return parse_compute_apps(done.stdout)


class _Tree:
    """One server's process and its children, with psutil handles kept for CPU deltas."""

    def __init__(self, proc: psutil.Process) -> None:
        self.root = proc
        self.known: dict[int, psutil.Process] = {}

    def sample(self) -> tuple[float, int, list[int]] | None:
        """(CPU %, RSS bytes, pids) since the last sample; None when the server is gone."""
        try:
            members = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return None
        cpu, rss, pids = 0.0, 0, []
        for p in members:
            held = self.known.setdefault(p.pid, p)
            try:
                with held.oneshot():
                    cpu += held.cpu_percent(None)
                    rss += held.memory_info().rss
            except psutil.Error:
                if held is self.root:
                    return None
                continue
            pids.append(p.pid)
        self.known = {pid: self.known[pid] for pid in pids}
        return cpu, rss, pids


def _live_process(record: InstanceRecord) -> psutil.Process | None:
    """The recorded server, if it still runs and is the very process recorded."""
    from llama_orchestrator.engine.process import Identity

    if not record.pid or not record.alive:
        return None
    recorded = record.process()
    if recorded is not None and not Identity(*recorded).matches_live():
        return None  # a reused PID
    try:
        return psutil.Process(record.pid)
    except psutil.Error:
        return None


def gateway_of(home: Home) -> Gateway:
    """Reads the daemon's gateway status; None when no daemon answers."""
    from llama_orchestrator.client.control import DaemonError, connect

    def read() -> dict[str, Any] | None:
        try:
            client = connect(home)
            if client is None:
                return None
            reply = client.get("/v1/gateway", timeout=5)
        except (OSError, DaemonError):
            return None
        return reply.body if reply.ok and isinstance(reply.body, dict) else None

    return read


def _estimate(memory: dict[str, Any] | None, *, gpu: bool) -> int | None:
    """The estimate the daemon recorded for the host (``cpu``) or its GPUs, in bytes."""
    found = [
        m["estimate_mb"]
        for device, m in (memory or {}).items()
        if (device != "cpu") == gpu and isinstance(m, dict) and m.get("estimate_mb") is not None
    ]
    return sum(found) * MIB if found else None


class Sampler:
    def __init__(
        self,
        home: Home,
        names: list[str] | None = None,
        *,
        gateway: Gateway | None = None,
        vram: Vram | None = None,
    ) -> None:
        self.home = home
        self.names = names
        self.gateway = gateway or gateway_of(home)
        self.vram = vram or NvidiaSmi()
        self.trees: dict[str, tuple[int, _Tree]] = {}
        self.memory: dict[str, dict[str, Any]] = {}  # name -> the daemon's memory record

    def _records(self) -> dict[str, InstanceRecord]:
        from llama_orchestrator.state.db import StateStore

        store = StateStore.open_for_reading(self.home.db_path)
        if store is None:
            return {}
        try:
            rows = {r.name: r for r in store.all()}
            self.memory = {
                n: recorded_memory.recorded(store, n, r.pid) or {} for n, r in rows.items()
            }
        finally:
            store.close()
        if self.names is not None:
            rows = {n: rows[n] for n in self.names if n in rows}
        return rows

    def running(self) -> list[str]:
        """The instances that run now (and were asked for), by name."""
        self.prime()
        return sorted(self.trees)

    def prime(self) -> None:
        """Find the running servers and start their CPU clocks (the next sample's base)."""
        seen: dict[str, tuple[int, _Tree]] = {}
        for name, row in self._records().items():
            pid = row.pid
            held = self.trees.get(name)
            if held is not None and held[0] == pid:
                seen[name] = held
                continue
            proc = _live_process(row)
            if proc is not None:
                tree = _Tree(proc)
                tree.sample()
                seen[name] = (proc.pid, tree)
        self.trees = seen

    def sample(self) -> list[dict[str, Any]]:
        """One row per running instance, by name; figures nobody knows are None."""
        self.prime()
        gw = self.gateway() or {}
        in_flight: dict[str, int] = gw.get("in_flight") or {}
        speeds: dict[str, float] = gw.get("tokens_per_s") or {}
        vram = self.vram() if self.trees else None
        rows = []
        for name in sorted(self.trees):
            pid, tree = self.trees[name]
            got = tree.sample()
            if got is None:
                continue  # it ended since prime(); the next sample finds its successor
            cpu, rss, pids = got
            used = [vram[p] for p in pids if p in vram] if vram is not None else []
            rows.append(
                {
                    "name": name,
                    "pid": pid,
                    "cpu_percent": round(cpu, 1),
                    "rss_bytes": rss,
                    "vram_bytes": sum(used) if used else None,
                    # the estimates the budgets start from, beside what is measured here
                    "estimate_host_bytes": _estimate(self.memory.get(name), gpu=False),
                    "estimate_vram_bytes": _estimate(self.memory.get(name), gpu=True),
                    "in_flight": in_flight.get(name),
                    "tokens_per_s": speeds.get(name),
                }
            )
        return rows
