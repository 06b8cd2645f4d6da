"""``llama-orch devices [DEVICE] [--json]``: the compute devices and who reported them.

``--json`` prints ``{"devices": [...], "sources": {...}}``. Each device has ``backend``
(``vulkan``, ``cuda``, ``metal``, ``rocm``...), ``index``, ``dev`` (the ``-dev`` name when
the resolved llama-server lists the device, else ``null``), ``name``,
``memory_total_mib``, ``memory_free_mib``, ``vendor``, ``type`` (``discrete``,
``integrated``, ``virtual``, ``other`` or ``null``) and ``sources`` (the tools that saw
it). ``sources`` maps each tool (``llama-server``, ``nvidia-smi``, ``vulkaninfo``,
``rocm-smi``, ``system_profiler``) to ``{"status": "ok"|"none"|"missing"|"failed",
"devices": n, "detail": reason-or-null, "command": [...]}``. A missing or failing tool
is not an error: the exit code is 0 unless a named DEVICE does not exist (1).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from llama_orchestrator.cli.common import EXIT_USAGE, fail, home_of, say

if TYPE_CHECKING:
    from llama_orchestrator.gpu.devices import Device


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value} MiB"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


app = typer.Typer()


@app.command()
def devices(
    ctx: typer.Context,
    device: Annotated[
        str | None,
        typer.Argument(help="Show one device only, e.g. Vulkan1, CUDA0 or cuda:0."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List GPUs with backend, index, name, total and free memory.

    Sources: `llama-server --list-devices` of the default binary (which names the
    -dev values), nvidia-smi, vulkaninfo, rocm-smi and macOS system_profiler, where
    installed.

    Examples:

      llama-orch devices

      llama-orch devices Vulkan1 --json
    """
    from llama_orchestrator.engine.binary import BinaryError, resolve_binary
    from llama_orchestrator.gpu.detect import detect
    from llama_orchestrator.gpu.devices import find_device, parse_device_ref

    wanted = None
    if device is not None:
        try:
            wanted = parse_device_ref(device)
        except ValueError as e:
            fail(str(e), EXIT_USAGE)
    home = home_of(ctx)
    try:
        binary = resolve_binary(None, home)
        found = detect(binary.argv_prefix)
    except BinaryError as e:
        found = detect(None, llama_problem=str(e))
    if wanted is not None:
        one = find_device(found.devices, *wanted)
        if one is None:
            seen = ", ".join(f"{d.label} ({d.summary()})" for d in found.devices) or "none"
            sources = found.sources_text()
            fail(f"device {device} not found; devices: {seen} (sources: {sources})")
        print(json.dumps(one.to_dict(), indent=2) if as_json else _describe(one))
        return
    if as_json:
        print(json.dumps(found.to_dict(), indent=2))
        return
    if not found.devices:
        print(f"no GPU devices found (sources: {found.sources_text()})")
        return
    head = ["DEV", "BACKEND", "INDEX", "NAME", "TOTAL", "FREE", "SOURCES"]
    rows = [_row(d) for d in found.devices]
    print(_table([head, *rows]))
    say(f"sources: {found.sources_text()}")
    if any(d.dev is None for d in found.devices):
        say(
            "DEV '-': not listed by llama-server, so -dev cannot select it "
            "(a build without that backend?)"
            if found.listed
            else "DEV '-': llama-server gave no device list; INDEX is the tool's numbering"
        )


def _row(d: Device) -> list[str]:
    memory = [_mib(d.total_mib), _mib(d.free_mib)]
    return [d.dev or "-", d.backend, str(d.index), d.name, *memory, ", ".join(d.sources)]


def _describe(device: Device) -> str:
    data = device.to_dict()
    data["sources"] = ", ".join(device.sources)
    return "\n".join(f"{k + ':':18}{'-' if v is None else v}" for k, v in data.items())
