"""An instance's estimate as configured, and the lint's device overcommit warning.

Above ``models`` (the GGUF reader and the arithmetic) and ``config`` (what a config says):
the two meet here, so neither imports the other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

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


def configured_fit(
    loaded: LoadedConfig,
    overhead: int | None = None,
    measured: Mapping[str, int] | None = None,
    *,
    host_overhead: int | None = None,
    loading: bool = False,
) -> dict[str, Any]:
    """``fit --json``'s ``configured`` object: the instance as written (its own
    ``gpu.layers``, context and slots), not the all-layer or suggested figure (issue 18).

    ``device_total`` / ``host_total`` are the estimate (as in ``full``); ``overhead`` and
    ``host_overhead`` the per-process overheads used (the device's learnt figure, else
    the backend's default); ``counted`` what the budget counts per device key
    (``gpu/overhead.py:counted_bytes``); with ``measured`` (``{device key: bytes}``, the
    running instance's peak) also ``measured`` and ``error_pct``: how far the measurement
    is from estimate + overhead, in percent of the measurement. A CPU instance has
    everything on ``cpu``. Raises GGUFError when the model cannot be read.
    """
    from llama_orchestrator.config.gateway import device_key
    from llama_orchestrator.gpu.overhead import counted_bytes, default_overhead
    from llama_orchestrator.models.header import read_model_info

    c = loaded.config
    on_gpu = c.gpu.backend != "cpu" and c.gpu.layers > 0
    params = FitParams.from_args(
        list(c.args),
        context_size=c.model.context_size,
        parallel=c.server.parallel,
        batch_size=c.model.batch_size,
    )
    est = estimate(read_model_info(loaded.model_path), params, c.gpu.layers if on_gpu else 0)
    host_over = default_overhead("cpu") if host_overhead is None else host_overhead
    guesses = {"cpu": (est.host_total if on_gpu else est.total, host_over)}
    device = device_key(c.gpu.backend, c.gpu.device_id) if on_gpu else None
    if device is not None:
        over = default_overhead(c.gpu.backend) if overhead is None else overhead
        guesses[device] = (est.device_total, over)
    seen = dict(measured or {})
    out: dict[str, Any] = {
        "layers": c.gpu.layers,
        "context_size": c.model.context_size,
        "parallel": c.server.parallel,
        "device": device,
        **est.to_dict(),
        "overhead": guesses[device][1] if device else 0,
        "host_overhead": host_over,
        "counted": {
            key: counted_bytes(need, seen.get(key), over, loading=loading)
            for key, (need, over) in guesses.items()
        },
        "measured": {k: v for k, v in seen.items() if k in guesses} or None,
    }
    if out["measured"]:
        out["error_pct"] = {
            key: round(100 * (need + over - seen[key]) / seen[key], 1)
            for key, (need, over) in guesses.items()
            if seen.get(key)
        }
    return out


def configured_lines(configured: Mapping[str, Any]) -> list[str]:
    """The table lines that lead ``fit NAME``'s output: the configured figure per device
    and, for a running instance, how far its last measurement was from it."""
    lines = []
    measured = configured.get("measured") or {}
    errors = configured.get("error_pct") or {}
    for key in configured["counted"]:
        if key == "cpu":
            need, over = configured["host_total"], configured["host_overhead"]
            if configured["device"] is None:
                need = configured["total"]
        else:
            need, over = configured["device_total"], configured["overhead"]
        line = (
            f"configured: {key}: {mib(need + over)} ({mib(need)} estimated + {mib(over)} "
            f"per process) with gpu.layers {configured['layers']}"
        )
        if key in measured:
            line += f"; measured {mib(measured[key])} ({errors.get(key, 0):+.1f} % off)"
        lines.append(line)
    return lines


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
        if gpu.backend == "cpu" or gpu.layers == 0 or isinstance(gpu.device_id, str):
            continue  # an ``auto`` one is placed at each start where its budget has room
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
