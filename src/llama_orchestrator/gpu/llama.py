"""``llama-server --list-devices``: ``Available devices:`` then one indented line per device.

Each line is ``  <name>: <description> (<total> MiB, <free> MiB free)`` (common/arg.cpp),
e.g. ``  Vulkan0: AMD Radeon RX 7900 XTX (24560 MiB, 23000 MiB free)``; a build without
GPU backends prints no line, or ``  (none)``. Backend log lines may come before the block.
"""

from __future__ import annotations

import re

from llama_orchestrator.gpu.devices import Device, ParseError, backend_of_prefix

SOURCE = "llama-server"
HEADER = "Available devices:"
_NAME = re.compile(r"^([A-Za-z_]+?)(\d+)$")
_MEMORY = re.compile(r"^(.*?)\s*\(\s*(\d+)\s*MiB\s*,\s*(\d+)\s*MiB free\s*\)\s*$")


def device_lines(output: str) -> list[tuple[str, str]]:
    """``[("Vulkan0", "AMD Radeon RX 7900 XTX (24560 MiB, 23000 MiB free)")]``."""
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if HEADER in line), None)
    if start is None:
        raise ParseError(f"no {HEADER!r} list in the output")
    found: list[tuple[str, str]] = []
    for line in lines[start + 1 :]:
        if not line[:1].isspace():
            break
        name, sep, description = line.strip().partition(":")
        if sep and name and " " not in name:
            found.append((name, description.strip()))
    return found


def parse(output: str) -> list[Device]:
    devices = []
    for name, description in device_lines(output):
        m = _NAME.match(name)
        backend, index = (backend_of_prefix(m.group(1)), int(m.group(2))) if m else (name, 0)
        mem = _MEMORY.match(description)
        total, free = (int(mem.group(2)), int(mem.group(3))) if mem else (None, None)
        label = mem.group(1) if mem else description
        devices.append(Device(backend, index, label or name, total, free, name, sources=(SOURCE,)))
    return devices
