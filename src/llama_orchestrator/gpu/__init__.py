"""GPU and other compute devices: detection from llama-server and vendor tools (issue 5)."""

from __future__ import annotations

from llama_orchestrator.gpu.devices import (
    DEVICE_PREFIX,
    Device,
    device_name,
    find_device,
    parse_device_ref,
)

__all__ = ["DEVICE_PREFIX", "Device", "device_name", "find_device", "parse_device_ref"]
