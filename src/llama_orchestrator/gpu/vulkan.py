"""``vulkaninfo --summary``: the ``Devices:`` section, one ``GPU<n>:`` block per device.

::

    Devices:
    ========
    GPU0:
            apiVersion         = 1.3.260
            vendorID           = 0x1002
            deviceType         = PHYSICAL_DEVICE_TYPE_DISCRETE_GPU
            deviceName         = AMD Radeon RX 7900 XTX (RADV NAVI31)
            deviceUUID         = 00000000-0300-0000-0000-000000000000

Older versions print ``apiVersion = 4206847 (1.3.255)``. The summary has no memory sizes.
llama.cpp's Vulkan backend skips CPU devices (llvmpipe) and a GPU listed twice (two
drivers, one ``deviceUUID``), so the index here is the position among the rest; that is
what ``Vulkan<n>`` means when llama-server uses the default device selection.
"""

from __future__ import annotations

import re

from llama_orchestrator.gpu.devices import Device, ParseError

SOURCE = "vulkaninfo"
ARGV = ["vulkaninfo", "--summary"]
VENDORS = {
    0x1002: "AMD",
    0x10DE: "NVIDIA",
    0x8086: "Intel",
    0x106B: "Apple",
    0x13B5: "ARM",
    0x5143: "Qualcomm",
    0x1010: "ImgTec",
    0x10005: "Mesa",
}
_GPU = re.compile(r"^GPU(\d+):\s*$")
_FIELD = re.compile(r"^\s+(\w+)\s*=\s*(.*?)\s*$")
_TYPE = re.compile(r"PHYSICAL_DEVICE_TYPE_(\w+)")


def _blocks(output: str) -> list[dict[str, str]]:
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "Devices:"), None)
    if start is None:
        errors = [line.strip() for line in lines if "ERROR" in line or "failed" in line.lower()]
        raise ParseError(errors[-1] if errors else "no 'Devices:' section in the output")
    blocks: list[dict[str, str]] = []
    for line in lines[start + 1 :]:
        if _GPU.match(line.strip()):
            blocks.append({})
        elif (m := _FIELD.match(line)) and blocks:
            blocks[-1][m.group(1)] = m.group(2)
        elif line.strip() and not line.strip().startswith("=") and blocks:
            break  # the section ended
    return blocks


def _kind(device_type: str) -> str:
    m = _TYPE.search(device_type)
    word = m.group(1).lower() if m else device_type.lower()
    kinds = {"discrete_gpu": "discrete", "integrated_gpu": "integrated", "virtual_gpu": "virtual"}
    return kinds.get(word, "cpu" if word == "cpu" else "other")


def _vendor(vendor_id: str) -> str | None:
    try:
        number = int(vendor_id.split()[0], 16)
    except (ValueError, IndexError):
        return None
    return VENDORS.get(number, vendor_id.split()[0])


def parse(output: str) -> list[Device]:
    devices: list[Device] = []
    seen: set[str] = set()
    for block in _blocks(output):
        kind = _kind(block.get("deviceType", ""))
        uuid = block.get("deviceUUID", "")
        if kind == "cpu" or (uuid and uuid in seen):
            continue
        seen.add(uuid)
        name = block.get("deviceName", "unknown Vulkan device")
        vendor = _vendor(block.get("vendorID", ""))
        devices.append(
            Device("vulkan", len(devices), name, vendor=vendor, kind=kind, sources=(SOURCE,))
        )
    return devices
