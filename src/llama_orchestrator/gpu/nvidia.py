"""``nvidia-smi --query-gpu=index,name,memory.total,memory.free --format=csv,noheader,nounits``.

One line per GPU: ``0, NVIDIA GeForce RTX 4090, 24564, 23897`` (memory in MiB). A field
the GPU cannot report reads ``[N/A]`` or ``[Not Supported]``. Without a driver it prints
``NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver...`` (exit
9); without GPUs ``No devices were found`` (exit 6). nvidia-smi numbers GPUs in PCI bus
order, CUDA (and so llama-server's CUDA<n>) fastest first unless
``CUDA_DEVICE_ORDER=PCI_BUS_ID``: devices are matched to llama-server's by name first.
"""

from __future__ import annotations

from llama_orchestrator.gpu.devices import Device, ParseError

SOURCE = "nvidia-smi"
ARGV = [
    "nvidia-smi",
    "--query-gpu=index,name,memory.total,memory.free",
    "--format=csv,noheader,nounits",
]


def _mib(text: str) -> int | None:
    text = text.strip().removesuffix("MiB").strip()
    return int(text) if text.isdigit() else None


def parse(output: str) -> list[Device]:
    devices = []
    for line in output.splitlines():
        if not line.strip():
            continue
        if line.strip().lower().startswith("no devices were found"):
            return []
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 4 or not fields[0].isdigit():
            raise ParseError(line.strip())
        name = ", ".join(fields[1:-2])  # a name with a comma keeps it
        total, free = _mib(fields[-2]), _mib(fields[-1])
        devices.append(
            Device("cuda", int(fields[0]), name, total, free, vendor="NVIDIA", sources=(SOURCE,))
        )
    return devices
