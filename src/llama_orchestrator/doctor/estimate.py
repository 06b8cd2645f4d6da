"""An instance's estimate as configured, and the lint's device overcommit warning.

Above ``models`` (the GGUF reader and the arithmetic) and ``config`` (what a config says):
the two meet here, so neither imports the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from llama_orchestrator.models.fit import Estimate, FitParams, MiB, estimate, mib
from llama_orchestrator.models.header import GGUFError

if TYPE_CHECKING:
    from llama_orchestrator.config.loader import LoadedConfig
    from llama_orchestrator.gpu.devices import Device


def config_estimate(loaded: LoadedConfig) -> Estimate:
    """The estimate for an instance as configured (its ``-ngl``, context, slots, args)."""
    from llama_orchestrator.models.header import read_model_info

    c = loaded.config
    params = FitParams.from_args(
        list(c.args),
        context_size=c.model.context_size,
        parallel=c.server.parallel,
        batch_size=c.model.batch_size,
    )
    return estimate(read_model_info(loaded.model_path), params, c.gpu.layers)


def device_overcommit(configs: Sequence[LoadedConfig], devices: Sequence[Device]) -> dict[str, str]:
    """``instance name -> warning`` for instances whose device cannot hold them all.

    Instances are grouped by ``(gpu.backend, gpu.device_id)``; a group warns when the sum
    of its device estimates exceeds the device's *total* memory ("clearly exceeds": free
    memory already counts whatever of them is running). For ``config lint``.
    """
    from llama_orchestrator.gpu.devices import find_device

    groups: dict[tuple[str, int], list[tuple[str, int]]] = {}
    for loaded in configs:
        gpu = loaded.config.gpu
        if gpu.backend == "cpu" or gpu.layers == 0:
            continue
        try:
            need = config_estimate(loaded).device_total
        except GGUFError:
            continue  # the model check reports the file
        groups.setdefault((gpu.backend, gpu.device_id), []).append((loaded.name, need))
    warnings: dict[str, str] = {}
    for (backend, index), members in groups.items():
        device = find_device(devices, backend, index)
        if device is None or device.total_mib is None:
            continue
        total = sum(need for _, need in members)
        if total > device.total_mib * MiB:
            parts = ", ".join(f"{name} {mib(need)}" for name, need in members)
            message = (
                f"{device.label} has {device.total_mib} MiB; its instances need about "
                f"{mib(total)} ({parts}); lower gpu.layers (see llama-orch fit NAME)"
            )
            for name, _ in members:
                warnings[name] = message
    return warnings
