"""``/metrics``' memory truth (issue 18): per instance and device, the estimate, the last
reading and the peak; per device, the per-process overhead the scheduler adds to each
start's estimate (learnt, or the backend's default)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from llama_orchestrator.daemon.supervisor import Supervisor

MIB = 1024 * 1024


def memory_families(sup: Supervisor) -> Iterator[Metric]:
    memory = GaugeMetricFamily(
        "llama_orch_instance_memory_bytes",
        "A running instance's memory per device: kind=estimate (fit's, as admitted), "
        "measured (the last reading of its process tree), peak (the highest reading, "
        "what the budget counts once there is one).",
        labels=["instance", "device", "kind"],
    )
    devices: set[str] = set()
    for name in sorted(sup.actors):
        for device, seen in sorted(sup.actors[name].snapshot.memory.items()):
            devices.add(device)
            for kind, mb in (
                ("estimate", seen.estimate_mb),
                ("measured", seen.measured_mb),
                ("peak", seen.peak_mb),
            ):
                if mb is not None:
                    memory.add_metric([name, device, kind], mb * MIB)
    yield memory
    overheads = sup.ctx.overheads
    for claim in sup.scheduler.holders.values():
        devices |= set(claim.memory_mb)
    overhead = GaugeMetricFamily(
        "llama_orch_device_overhead_bytes",
        "What one more server process uses on the device beyond its estimate (runtime "
        "context, library workspaces): learnt from measurements, else the backend's default.",
        labels=["device"],
    )
    for device in sorted(devices | set(overheads.devices())):
        overhead.add_metric([device], overheads.bytes(device))
    yield overhead
