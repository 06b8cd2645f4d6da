"""``rocm-smi --showproductname --showmeminfo vram --json`` (or the same without ``--json``).

JSON: ``{"card0": {"Card Series": "...", "Card Vendor": "...", "VRAM Total Memory (B)":
"25753026560", "VRAM Total Used Memory (B)": "1073741824", ...}, ...}`` (older versions
spell the keys ``Card series``). Text: ``GPU[0]  : Card Series:  Navi 31 [...]`` lines
between ``====`` banners. Without the amdgpu driver it logs ``ERROR:root:Driver not
initialized`` and lists nothing.
"""

from __future__ import annotations

import json
import re
from typing import Any

from llama_orchestrator.gpu.devices import Device, ParseError

SOURCE = "rocm-smi"
ARGV = ["rocm-smi", "--showproductname", "--showmeminfo", "vram", "--json"]
_CARD = re.compile(r"^card(\d+)$", re.I)
_LINE = re.compile(r"^GPU\[(\d+)\]\s*:\s*(.+?)\s*:\s*(.*?)\s*$")


def _get(fields: dict[str, Any], *keys: str) -> str | None:
    lower = {str(k).lower(): v for k, v in fields.items()}
    for key in keys:
        value = lower.get(key.lower())
        if value not in (None, "", "N/A"):
            return str(value)
    return None


def _device(index: int, fields: dict[str, Any]) -> Device:
    name = _get(fields, "Card Series", "Marketing Name", "Card Model") or f"AMD GPU {index}"
    total = _get(fields, "VRAM Total Memory (B)")
    used = _get(fields, "VRAM Total Used Memory (B)")
    total_mib = int(total) // 2**20 if total and total.isdigit() else None
    free_mib = (
        (int(total) - int(used)) // 2**20
        if total and used and total.isdigit() and used.isdigit()
        else None
    )
    vendor = "AMD" if "amd" in (_get(fields, "Card Vendor") or "amd").lower() else None
    return Device("rocm", index, name, total_mib, free_mib, vendor=vendor, sources=(SOURCE,))


def _from_json(data: Any) -> list[Device]:
    if not isinstance(data, dict):
        raise ParseError("unexpected JSON from rocm-smi")
    cards = []
    for key, fields in data.items():
        m = _CARD.match(str(key))
        if m and isinstance(fields, dict):
            cards.append(_device(int(m.group(1)), fields))
    return sorted(cards, key=lambda d: d.index)


def _from_text(output: str) -> list[Device]:
    cards: dict[int, dict[str, Any]] = {}
    for line in output.splitlines():
        m = _LINE.match(line.strip())
        if m:
            cards.setdefault(int(m.group(1)), {})[m.group(2)] = m.group(3)
    if not cards and "ERROR" in output:
        raise ParseError(next(x.strip() for x in output.splitlines() if "ERROR" in x))
    return [_device(i, fields) for i, fields in sorted(cards.items())]


def parse(output: str) -> list[Device]:
    text = output.strip()
    start = text.find("{")
    if start >= 0:  # warnings may precede the JSON object
        try:
            return _from_json(json.loads(text[start:]))
        except json.JSONDecodeError:
            pass
    return _from_text(output)
