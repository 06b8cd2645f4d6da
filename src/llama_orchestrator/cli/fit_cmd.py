"""``llama-orch fit`` and ``llama-orch templates`` (issue 5, parts 3-4).

``fit NAME`` takes the model, ``context_size``, ``parallel``, ``batch_size``, backend and
device from the instance's config (and ``-ub``/``-ctk``/``-ctv``/``-kvu`` from its
``args``); ``fit --model PATH`` takes them from the options. The device's free memory
comes from device detection (``llama-orch devices``), or from ``--memory-mb``; the CPU
backend uses the host's available memory. Exit 0 with an answer (fits, partial or does
not fit: see ``verdict`` in ``--json``), 1 when the model or device cannot be read,
2 for bad options.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from llama_orchestrator.cli.common import EXIT_USAGE, check_names, fail, home_of, say

if TYPE_CHECKING:
    from llama_orchestrator.config.loader import LoadedConfig
    from llama_orchestrator.home import Home
    from llama_orchestrator.models.fit import FitParams, FitResult
    from llama_orchestrator.models.header import ModelInfo


def _device_memory(
    home: Home, backend: str, index: int | None, binary: str | None
) -> tuple[int, str]:
    """``(free bytes, description)`` of a detected device (``index`` None: the
    backend's device with the most free memory, as ``gpu.device_id: "auto"`` would get
    on an idle machine); fails when it is not found."""
    from llama_orchestrator.engine.binary import BinaryError, resolve_binary
    from llama_orchestrator.gpu.detect import detect
    from llama_orchestrator.gpu.devices import find_device

    try:
        found = detect(resolve_binary(binary, home).argv_prefix)
    except BinaryError as e:
        found = detect(None, llama_problem=str(e))
    if index is None:
        mine = [d for d in found.devices if d.backend == backend]
        index = max(mine, key=lambda d: (d.free_mib or 0, -d.index)).index if mine else 0
    device = find_device(found.devices, backend, index)
    if device is None:
        seen = ", ".join(d.label for d in found.devices) or "none"
        fail(
            f"device {backend}:{index} not found (devices: {seen}; "
            f"sources: {found.sources_text()}); pass --memory-mb to give its memory"
        )
    memory = device.free_mib if device.free_mib is not None else device.total_mib
    if memory is None:
        fail(f"{device.label} ({device.name}) reports no memory size; pass --memory-mb")
    kind = "free" if device.free_mib is not None else "total"
    return memory * 2**20, f"{device.label} {device.name} ({memory} MiB {kind})"


def _host_memory() -> tuple[int, str]:
    import psutil

    available = int(psutil.virtual_memory().available)
    return available, f"host memory ({available // 2**20} MiB available)"


def _report(result: FitResult, device: str, model: str) -> str:
    from llama_orchestrator.models.fit import mib

    e, s = result.full, result.suggested
    lines = [
        f"model:     {model}",
        f"device:    {device}",
        f"context:   {e.n_ctx} cells ({e.n_ctx_seq} per slot)",
        f"weights:   {mib(e.weights)}",
        f"KV cache:  {mib(e.kv)}",
        f"compute:   {mib(e.compute)} (estimate)",
    ]
    if result.on_gpu:
        lines += [
            f"needed:    {mib(result.needed)} on the device with all {e.n_layer} layers "
            f"+ output offloaded (-ngl {e.n_layer + 1})",
            f"budget:    {mib(result.budget)} (free memory minus the reserve)",
        ]
        if result.fits_fully:
            lines.append(f"verdict:   fits; suggested gpu.layers: {result.suggested_layers}")
        elif result.suggested_layers:
            lines.append(
                f"verdict:   partial; suggested gpu.layers: {result.suggested_layers} "
                f"({mib(s.device_total)} on the device, {mib(s.host_total)} in host memory)"
            )
        else:
            lines.append("verdict:   does not fit even one layer; use gpu.layers 0 (CPU)")
    else:
        lines += [
            f"needed:    {mib(result.needed)} of host memory",
            f"available: {mib(result.budget)}",
            f"verdict:   {'fits' if result.fits_fully else 'does not fit'}",
        ]
    return "\n".join(lines)


app = typer.Typer()


@app.command()
def fit(
    ctx: typer.Context,
    name: Annotated[
        str | None, typer.Argument(help="An instance: its config gives every setting.")
    ] = None,
    model: Annotated[
        Path | None, typer.Option("--model", "-m", help="A GGUF file instead of an instance.")
    ] = None,
    ctx_size: Annotated[int | None, typer.Option("--ctx", help="Context size (-c).")] = None,
    parallel: Annotated[int | None, typer.Option("--parallel", help="Slots (-np).")] = None,
    device: Annotated[
        str | None,
        typer.Option("--device", help="Device to fit on: cuda:0, Vulkan1, metal:0, cpu."),
    ] = None,
    memory_mb: Annotated[
        int | None, typer.Option("--memory-mb", help="Free memory of the device (MiB).")
    ] = None,
    reserve_mb: Annotated[
        int, typer.Option("--reserve-mb", help="GPU memory to leave free (MiB).")
    ] = 512,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Estimate weights, KV cache and compute memory; say whether it fits, suggest -ngl.

    Examples: llama-orch fit gemma; llama-orch fit --model m.gguf --ctx 8192 --device cuda:0;
    llama-orch fit --model m.gguf --memory-mb 8192
    """
    from llama_orchestrator.models.fit import FitParams
    from llama_orchestrator.models.header import GGUFError, read_model_info

    if (name is None) == (model is None):
        fail("name an instance or give --model PATH (not both)", EXIT_USAGE)
    for value, flag in (
        (ctx_size, "--ctx"),
        (parallel, "--parallel"),
        (memory_mb, "--memory-mb"),
    ):
        if value is not None and value < 1:
            fail(f"{flag} must be at least 1", EXIT_USAGE)
    home = home_of(ctx)
    if name is not None:
        target = _instance_target(home, name)
    else:
        assert model is not None
        target = _Target(model.expanduser().absolute())
    if ctx_size is not None:
        target.base["context_size"] = ctx_size
    if parallel is not None:
        target.base["parallel"] = parallel
    if device is not None:
        target.backend, target.index = _device_ref(device)
    elif name is None and memory_mb is not None:
        target.backend = "gpu"  # a device known only by its memory size
    params = FitParams.from_args(target.args, **target.base)
    try:
        info = read_model_info(target.model_path)
        result, where = _estimate(home, target, info, params, memory_mb, reserve_mb)
    except GGUFError as e:
        fail(str(e))
    configured = _configured(home, name, target) if name is not None else None
    if as_json:
        out = {"model": str(target.model_path), "device": where, "params": params.__dict__}
        out.update(result.to_dict())
        if configured is not None:
            out["configured"] = configured
        print(json.dumps(out, indent=2))
    else:
        if configured is not None:
            from llama_orchestrator.doctor.estimate import configured_lines

            print("\n".join(configured_lines(configured)))
        print(_report(result, where, str(target.model_path)))


def _configured(home: Home, name: str, target: _Target) -> dict[str, Any] | None:
    """``configured`` (issue 18): the instance as written, with the per-process overhead
    learnt on its device and, when it runs, its measured peak per device (as the daemon
    recorded them in the state database). None when ``--device`` moved the fit elsewhere
    or no config was loaded."""
    from llama_orchestrator.daemon.overheads import Overheads
    from llama_orchestrator.doctor.estimate import configured_fit
    from llama_orchestrator.gpu.overhead import MiB, overhead_key
    from llama_orchestrator.state import memory as recorded_memory
    from llama_orchestrator.state.db import StateStore

    loaded = target.loaded
    if loaded is None:
        return None
    overheads, measured = Overheads(), {}
    store = StateStore.open_for_reading(home.db_path)
    if store is not None:
        try:
            overheads = Overheads(store)
            row = store.get(name)
            loaded = _where_placed(loaded, row.device if row and row.pid else None)
            seen = recorded_memory.recorded(store, name, row.pid if row else None) or {}
            measured = {d: v["peak_mb"] * MiB for d, v in seen.items() if v.get("peak_mb")}
        except Exception:  # an older database: the defaults, nothing measured
            pass
        finally:
            store.close()
    gpu = loaded.config.gpu
    return configured_fit(
        loaded,
        overheads.bytes(f"{gpu.backend}:{gpu.device_id}"),
        measured,
        host_overhead=overheads.bytes(overhead_key("cpu", [gpu.backend])),
    )


def _where_placed(loaded: LoadedConfig, label: str | None) -> LoadedConfig:
    """An ``auto`` instance that runs, on the device its run was placed on (issue 7)."""
    from llama_orchestrator.daemon.placement import label_index, placed_config

    index = label_index(label) if loaded.config.gpu.auto else None
    return loaded if index is None else placed_config(loaded, index)


@dataclass
class _Target:
    """What ``fit`` estimates for: a model file, the settings that size it, and where."""

    model_path: Path
    base: dict[str, Any] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    backend: str = "cpu"
    index: int | None = 0  # None: gpu.device_id "auto" (the most free device)
    binary: str | None = None
    loaded: LoadedConfig | None = None  # fit NAME: the instance's config


def _instance_target(home: Home, name: str) -> _Target:
    """An instance's model and settings, from its config; exits when it cannot be fitted."""
    from llama_orchestrator.config.loader import ConfigError, load_instance

    check_names([name])
    try:
        loaded = load_instance(home, name)
    except (ConfigError, LookupError) as e:
        fail(str(e))
    if loaded.remote is not None:
        fail(
            f"{name!r} is a remote instance ({loaded.remote.url}): its model runs on "
            "another machine; run `llama-orch fit` there, or pass --model FILE"
        )
    c = loaded.config
    base = {
        "context_size": c.model.context_size,
        "parallel": c.server.parallel,
        "batch_size": c.model.batch_size,
    }
    index = None if isinstance(c.gpu.device_id, str) else c.gpu.device_id
    return _Target(loaded.model_path, base, c.args, c.gpu.backend, index, c.binary, loaded)


def _device_ref(device: str) -> tuple[str, int]:
    """``--device`` as (backend, index); exits 2 on a reference it cannot read."""
    if device.strip().lower() == "cpu":
        return "cpu", 0
    from llama_orchestrator.gpu.devices import parse_device_ref

    try:
        return parse_device_ref(device)
    except ValueError as e:
        fail(str(e), EXIT_USAGE)


def _estimate(
    home: Home,
    target: _Target,
    info: ModelInfo,
    params: FitParams,
    memory_mb: int | None,
    reserve_mb: int,
) -> tuple[FitResult, str]:
    """The fit on the target's device, and the words that name the memory it used."""
    from llama_orchestrator.models.fit import fit_gpu, fit_host

    backend, index = target.backend, target.index
    if backend == "cpu":
        available, where = (
            (memory_mb * 2**20, f"host ({memory_mb} MiB given)")
            if memory_mb is not None
            else _host_memory()
        )
        return fit_host(info, params, available), where
    if memory_mb is not None:
        at = "auto" if index is None else index
        free, where = memory_mb * 2**20, f"{backend}:{at} ({memory_mb} MiB given)"
        if backend == "gpu":
            where = f"a GPU with {memory_mb} MiB free"
    else:
        free, where = _device_memory(home, backend, index, target.binary)
    return fit_gpu(info, params, free, reserve_mb * 2**20), where


@app.command()
def templates(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List the config templates for `create --template`: built-in and the home's own.

    Add your own as <home>/templates/NAME.json: a partial config, plus "description".
    """
    from llama_orchestrator.templates import load_templates, templates_dir

    home = home_of(ctx)
    found, problems = load_templates(home)
    for problem in problems.values():
        say(f"warning: {problem}")
    if as_json:
        print(json.dumps([t.to_dict() for t in found.values()], indent=2))
        return
    width = max(len(n) for n in found)
    for t in found.values():
        where = "" if t.source == "built-in" else f"  [{t.source}]"
        print(f"{t.name:<{width}}  {t.description}{where}")
    say(f"your own templates: {templates_dir(home)}/NAME.json")
