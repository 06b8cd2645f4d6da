"""What a GGUF model file says about itself, read from its header only.

``gguf.GGUFReader`` materialises every metadata array (a 150k-token vocabulary takes
seconds), so this walks the header itself over an mmap: scalar keys are decoded, arrays
are skipped by size, and tensor infos give the parameter count. The file's tensor data is
never touched, so a 20 GB model describes in milliseconds. The value types are the GGUF
spec's; the file-type names mirror the ``gguf`` package's enum.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llama_orchestrator.errors import OrchestratorError

_SCALAR = {  # GGUF value type -> struct format
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9


class GGUFError(OrchestratorError, ValueError):
    pass


@dataclass
class ModelInfo:
    path: str
    file_size: int
    gguf_version: int
    architecture: str | None
    name: str | None
    parameters: int
    quantization: str | None
    context_length: int | None
    layers: int | None
    embedding_length: int | None
    head_count: int | None
    head_count_kv: int | None
    tensor_count: int
    metadata: dict[str, Any] = field(default_factory=dict)  # the scalar keys

    @property
    def parameters_human(self) -> str:
        return human_count(self.parameters)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["parameters_human"] = self.parameters_human
        return d


def human_count(n: int) -> str:
    for unit, size in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= size:
            return f"{n / size:.1f}{unit}".replace(".0", "")
    return str(n)


class HeaderCursor:
    def __init__(self, buf: mmap.mmap) -> None:
        self.buf = buf
        self.pos = 0

    def unpack(self, fmt: str) -> Any:
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.unpack("<Q")
        end = self.pos + n
        if end > len(self.buf):
            raise IndexError
        raw = self.buf[self.pos : end]
        self.pos = end
        return raw.decode("utf-8", "replace")

    def value(self, vtype: int) -> Any:
        if vtype in _SCALAR:
            return self.unpack(_SCALAR[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            self.skip_array()
            return None
        raise GGUFError(f"unknown metadata value type {vtype} at byte {self.pos}")

    def skip_array(self) -> None:
        etype, count = self.unpack("<I"), self.unpack("<Q")
        if etype in _SCALAR:
            self.pos += count * struct.calcsize(_SCALAR[etype])
        elif etype == _STRING:
            for _ in range(count):
                self.pos += 8 + struct.unpack_from("<Q", self.buf, self.pos)[0]
        elif etype == _ARRAY:
            for _ in range(count):
                self.skip_array()
        else:
            raise GGUFError(f"unknown array element type {etype} at byte {self.pos}")
        if self.pos > len(self.buf):
            raise IndexError


def read_model_info(path: str | Path) -> ModelInfo:
    """Parse the header of the GGUF file at ``path``; GGUFError says what is wrong."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = path.stat().st_size
            if size < 24:
                raise GGUFError(f"{path}: not a GGUF file (only {size} bytes)")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _parse(path, size, buf)
    except OSError as e:
        raise GGUFError(f"{path}: cannot read: {e.strerror or e}") from None


def _parse(path: Path, size: int, buf: mmap.mmap) -> ModelInfo:
    if buf[:4] != b"GGUF":
        raise GGUFError(f"{path}: not a GGUF file (starts with {bytes(buf[:4])!r})")
    cur = HeaderCursor(buf)
    cur.pos = 4
    try:
        version = cur.unpack("<I")
        if version < 2:
            raise GGUFError(f"{path}: GGUF version {version} is too old to read")
        n_tensors, n_kv = cur.unpack("<Q"), cur.unpack("<Q")
        meta: dict[str, Any] = {}
        for _ in range(n_kv):
            key = cur.string()
            value = cur.value(cur.unpack("<I"))
            if value is not None:
                meta[key] = value
        params = 0
        for _ in range(n_tensors):
            cur.string()
            dims = [cur.unpack("<Q") for _ in range(cur.unpack("<I"))]
            cur.pos += 12  # tensor type (u32) + data offset (u64)
            count = 1
            for d in dims:
                count *= d
            params += count
    except (struct.error, IndexError):
        raise GGUFError(f"{path}: truncated GGUF header (ends at byte {size})") from None
    arch = meta.get("general.architecture")

    def arch_key(suffix: str) -> int | None:
        value = meta.get(f"{arch}.{suffix}")
        return int(value) if isinstance(value, int) else None

    return ModelInfo(
        path=str(path),
        file_size=size,
        gguf_version=version,
        architecture=arch,
        name=meta.get("general.name"),
        parameters=params,
        quantization=_file_type_name(meta.get("general.file_type")),
        context_length=arch_key("context_length"),
        layers=arch_key("block_count"),
        embedding_length=arch_key("embedding_length"),
        head_count=arch_key("attention.head_count"),
        head_count_kv=arch_key("attention.head_count_kv"),
        tensor_count=n_tensors,
        metadata=meta,
    )


# ``general.file_type`` names: gguf.LlamaFileType without its MOSTLY_/ALL_ prefixes.
# Kept here because importing the gguf package pulls in numpy (~80 ms on a small
# machine, a third of describe's budget); tests check it still equals the package's enum.
FILE_TYPES: dict[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
    39: "NVFP4",
    40: "Q1_0",
    1024: "GUESSED",
}


def _file_type_name(value: Any) -> str | None:
    if not isinstance(value, int):
        return None
    return FILE_TYPES.get(value, f"type {value}")
