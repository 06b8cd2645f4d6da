"""``system_profiler SPDisplaysDataType -json`` on macOS.

``{"SPDisplaysDataType": [{"_name": "Apple M2 Max", "sppci_model": "Apple M2 Max",
"sppci_cores": "38", "spdisplays_vendor": "sppci_vendor_Apple", ...}]}``. Intel Macs add
``"spdisplays_vram": "8 GB"`` (discrete) or ``"spdisplays_vram_shared": "1536 MB"``.
Apple silicon shares system memory, so no size is given: llama-server's ``MTL0`` reports
the usable working set. The Metal backend uses the default device, hence index 0 first.
"""

from __future__ import annotations

import json
import re
from typing import Any

from llama_orchestrator.gpu.devices import Device, ParseError

SOURCE = "system_profiler"
ARGV = ["system_profiler", "SPDisplaysDataType", "-json"]
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([MG])B\s*$", re.I)


def _mib(text: Any) -> int | None:
    m = _SIZE.match(str(text)) if text else None
    if m is None:
        return None
    value = float(m.group(1))
    return int(value * 1024) if m.group(2).upper() == "G" else int(value)


def _vendor(text: str) -> str | None:
    word = (re.sub(r"^(sppci|spdisplays)_vendor_", "", text).split() or [""])[0]
    return {"apple": "Apple", "amd": "AMD", "ati": "AMD", "intel": "Intel", "nvidia": "NVIDIA"}.get(
        word.lower(), word or None
    )


def parse(output: str) -> list[Device]:
    try:
        data = json.loads(output)
    except json.JSONDecodeError:
        line = next((x.strip() for x in output.splitlines() if x.strip()), "no output")
        raise ParseError(line) from None
    items = data.get("SPDisplaysDataType") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ParseError("no SPDisplaysDataType list in the output")
    devices: list[Device] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        name = str(item.get("sppci_model") or item.get("_name") or "unknown GPU")
        dedicated = _mib(item.get("spdisplays_vram"))
        kind = "discrete" if dedicated else "integrated"
        vendor = _vendor(str(item.get("spdisplays_vendor", "")))
        devices.append(
            Device("metal", len(devices), name, dedicated, None, None, vendor, kind, (SOURCE,))
        )
    return devices
