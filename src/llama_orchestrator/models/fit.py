"""Will a model fit on a device? Memory estimates from the GGUF header (issue 5, part 4).

Three terms, each the way llama.cpp allocates it:

- **weights**: the exact byte size of every tensor, from the tensor infos of the header
  (element count x the ggml type's block size). ``-ngl N`` puts the last ``min(N,
  n_layer)`` repeating layers (``blk.*``) on the GPU, and the output layer too when
  ``N > n_layer``; the token embeddings always stay in host memory.
- **KV cache**: ``n_layer x n_ctx x (n_embd_k x bytes(type_k) + n_embd_v x
  bytes(type_v))`` with f16 (2 bytes) by default. llama-server's ``-c`` is the total over
  all slots: each of the ``-np`` slots gets ``n_ctx / np`` cells, rounded up to 256, so
  ``parallel`` changes the KV size only through that rounding. The KV of offloaded layers
  lives on the GPU.
- **compute buffer**: ``n_ubatch x (2 n_ctx_seq + 4 (3 n_ff + n_q + 2 n_embd)) + 4 n_vocab
  x n_outputs`` bytes: the f16 attention mask and the f32 activations that are live at
  once for one micro-batch with flash attention (llama.cpp's ``auto`` default): the FFN's
  gate, up and their product, the query (``n_q = n_head x head_k``, wider than ``n_embd``
  in Gemma) and two residual streams; then the f32 logits of the rows that are output.
  llama.cpp reserves its graph for ``n_outputs_max``, one row per slot (``-np``), not for
  every token of the micro-batch: counting every token put 512 MiB of logits into Gemma 3
  270M's estimate (262k tokens) where the real server's compute buffer is 23 MiB
  (``-lv 4``: 23.28 MiB at ``-c 4096 -np 1``; this formula says 21.5). It is the least
  certain term: a backend without flash attention also needs an f32
  ``n_head x n_ubatch x n_ctx_seq`` score matrix.

Checked against the real llama-server's load log in ``tests/test_fit.py``.
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llama_orchestrator.models.header import GGUFError, HeaderCursor, ModelInfo

if TYPE_CHECKING:
    pass

MiB = 2**20
KV_PAD = 256  # llama.cpp rounds each sequence's KV cells up to a multiple of this
DEFAULT_UBATCH = 512
# Kept free on a GPU beyond the estimate: driver context, fragmentation, other users.
DEFAULT_RESERVE_MB = 512

# ggml type id -> (elements per block, bytes per block); equals gguf.GGML_QUANT_SIZES
# (tests check it) without importing numpy.
GGML_TYPE_SIZES: dict[int, tuple[int, int]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24),
    8: (32, 34), 9: (32, 40), 10: (256, 84), 11: (256, 110), 12: (256, 144),
    13: (256, 176), 14: (256, 210), 15: (256, 292), 16: (256, 66), 17: (256, 74),
    18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82),
    23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8),
    29: (256, 56), 30: (1, 2), 34: (256, 54), 35: (256, 66), 39: (32, 17),
    40: (64, 36), 41: (128, 18),
}  # fmt: skip

# KV cache types (``-ctk`` / ``-ctv``) -> bytes per element.
CACHE_TYPE_BYTES: dict[str, float] = {
    "f32": 4,
    "f16": 2,
    "bf16": 2,
    "q8_0": 34 / 32,
    "q4_0": 18 / 32,
    "q4_1": 20 / 32,
    "iq4_nl": 18 / 32,
    "q5_0": 22 / 32,
    "q5_1": 24 / 32,
}


@dataclass(frozen=True)
class TensorSizes:
    """Weight bytes by where llama.cpp places them."""

    per_layer: tuple[int, ...]  # blk.<i>.* for i in 0..n_layer-1
    output: int  # output.weight, output_norm.*: the "output layer" of -ngl
    input: int  # token_embd.* and anything else: always host memory
    n_vocab: int | None

    @property
    def total(self) -> int:
        return sum(self.per_layer) + self.output + self.input

    def on_gpu(self, ngl: int) -> int:
        n_layer = len(self.per_layer)
        k = min(max(ngl, 0), n_layer)
        gpu = sum(self.per_layer[n_layer - k :])
        return gpu + (self.output if ngl > n_layer else 0)


def tensor_sizes(path: str | Path, n_layer: int) -> TensorSizes:
    """Walk the tensor infos of the GGUF at ``path``; GGUFError when it cannot be read."""
    path = Path(path)
    per_layer = [0] * n_layer
    output = inp = 0
    n_vocab: int | None = None
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            if buf[:4] != b"GGUF":
                raise GGUFError(f"{path}: not a GGUF file (starts with {bytes(buf[:4])!r})")
            cur = HeaderCursor(buf)
            cur.pos = 8
            n_tensors, n_kv = cur.unpack("<Q"), cur.unpack("<Q")
            alignment = 32
            for _ in range(n_kv):
                key = cur.string()
                value = cur.value(cur.unpack("<I"))
                if key == "general.alignment" and isinstance(value, int) and value > 0:
                    alignment = value
            data_end = 0
            for _ in range(n_tensors):
                name = cur.string()
                dims = [cur.unpack("<Q") for _ in range(cur.unpack("<I"))]
                ttype = cur.unpack("<I")
                size = _tensor_bytes(dims, ttype)
                data_end = max(data_end, cur.unpack("<Q") + size)
                if name.startswith("blk."):
                    index = name.split(".", 2)[1]
                    if index.isdigit() and int(index) < n_layer:
                        per_layer[int(index)] += size
                        continue
                if name.startswith("output"):
                    output += size
                else:
                    inp += size
                if name == "token_embd.weight" and len(dims) == 2:
                    n_vocab = dims[1]
            # A partial download has a whole header but not all the tensor data after it.
            needed = -(-cur.pos // alignment) * alignment + data_end
            if needed > len(buf):
                raise GGUFError(
                    f"{path}: truncated GGUF file: its tensors need {needed} bytes, "
                    f"the file has {len(buf)}"
                )
    except (struct.error, IndexError, ValueError) as e:
        if isinstance(e, GGUFError):
            raise
        raise GGUFError(f"{path}: truncated GGUF header") from None
    except OSError as e:
        raise GGUFError(f"{path}: cannot read: {e.strerror or e}") from None
    return TensorSizes(tuple(per_layer), output, inp, n_vocab)


def _tensor_bytes(dims: list[int], ttype: int) -> int:
    count = math.prod(dims)
    block, size = GGML_TYPE_SIZES.get(ttype, (1, 2))  # unknown type: guess 16 bits
    return count // block * size


@dataclass(frozen=True)
class FitParams:
    """The run settings that change memory use (from the config or the command line)."""

    context_size: int = 4096
    parallel: int = 1
    batch_size: int = 512
    ubatch_size: int = DEFAULT_UBATCH
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    kv_unified: bool = False

    @classmethod
    def from_args(cls, args: list[str], **base: Any) -> FitParams:
        """Pick up ``-ub``, ``-ctk``/``-ctv`` and ``-kvu`` from a config's extra ``args``."""
        values: dict[str, Any] = dict(base)
        names = {
            "-ub": "ubatch_size",
            "--ubatch-size": "ubatch_size",
            "-ctk": "cache_type_k",
            "--cache-type-k": "cache_type_k",
            "-ctv": "cache_type_v",
            "--cache-type-v": "cache_type_v",
        }
        for i, arg in enumerate(args):
            if arg in ("-kvu", "--kv-unified"):
                values["kv_unified"] = True
            key = names.get(arg)
            if key and i + 1 < len(args):
                value = args[i + 1]
                if key == "ubatch_size":
                    if value.isdigit() and int(value) > 0:
                        values[key] = int(value)
                elif value.lower() in CACHE_TYPE_BYTES:
                    values[key] = value.lower()
        return cls(**values)


@dataclass(frozen=True)
class Estimate:
    n_layer: int
    gpu_layers: int  # the -ngl the device figures are for (clamped to n_layer + 1)
    n_ctx: int  # KV cells in total, after llama.cpp's padding
    n_ctx_seq: int
    weights: int
    weights_gpu: int
    kv: int
    kv_gpu: int
    compute: int

    @property
    def device_total(self) -> int:
        """Bytes on the GPU for ``gpu_layers`` (0 when nothing is offloaded)."""
        return self.weights_gpu + self.kv_gpu + (self.compute if self.gpu_layers else 0)

    @property
    def host_total(self) -> int:
        """Bytes in host memory (weights are mmapped, so they can be paged out)."""
        return self.weights - self.weights_gpu + self.kv - self.kv_gpu + self.compute

    @property
    def total(self) -> int:
        return self.weights + self.kv + self.compute

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(device_total=self.device_total, host_total=self.host_total, total=self.total)
        return d


def _arch_int(info: ModelInfo, key: str) -> int | None:
    value = info.metadata.get(f"{info.architecture}.{key}")
    return int(value) if isinstance(value, int) else None


def kv_dims(info: ModelInfo) -> tuple[int, int]:
    """``(n_embd_k, n_embd_v)``: KV width per token and layer (GQA-aware)."""
    n_embd, n_head = info.embedding_length, info.head_count
    if not n_embd or not n_head:
        raise GGUFError(f"{info.path}: the header has no embedding length or head count")
    n_head_kv = info.head_count_kv or n_head
    head_k = _arch_int(info, "attention.key_length") or n_embd // n_head
    head_v = _arch_int(info, "attention.value_length") or n_embd // n_head
    return head_k * n_head_kv, head_v * n_head_kv


def context_cells(params: FitParams) -> tuple[int, int]:
    """``(n_ctx, n_ctx_seq)`` as llama.cpp sizes them for llama-server's slots."""
    seqs = 1 if params.kv_unified else max(params.parallel, 1)
    per_seq = -(-params.context_size // seqs)
    per_seq = -(-per_seq // KV_PAD) * KV_PAD
    return per_seq * seqs, per_seq


def estimate(
    info: ModelInfo,
    params: FitParams,
    gpu_layers: int = 0,
    sizes: TensorSizes | None = None,
) -> Estimate:
    """Memory for running ``info``'s model with ``params`` and ``-ngl gpu_layers``."""
    n_layer = info.layers
    if not n_layer:
        raise GGUFError(f"{info.path}: the header has no layer count (block_count)")
    sizes = sizes or tensor_sizes(info.path, n_layer)
    n_embd_k, n_embd_v = kv_dims(info)
    n_ctx, n_ctx_seq = context_cells(params)
    per_cell = n_embd_k * CACHE_TYPE_BYTES[params.cache_type_k]
    per_cell += n_embd_v * CACHE_TYPE_BYTES[params.cache_type_v]
    kv = int(n_layer * n_ctx * per_cell)
    ngl = min(max(gpu_layers, 0), n_layer + 1)
    kv_gpu = int(kv * min(ngl, n_layer) / n_layer)
    n_batch = min(params.batch_size, params.context_size)  # capped by -c, before padding
    n_ubatch = min(params.ubatch_size, n_batch)
    n_embd = info.embedding_length or 0
    n_ff = _arch_int(info, "feed_forward_length") or 4 * n_embd
    n_vocab = sizes.n_vocab or 32_000
    n_head = info.head_count or 1
    n_q = n_head * (_arch_int(info, "attention.key_length") or n_embd // n_head)
    n_outputs = min(max(params.parallel, 1), n_ubatch)  # llama.cpp's n_outputs_max
    activations = 4 * (3 * n_ff + n_q + 2 * n_embd)
    compute = n_ubatch * (2 * n_ctx_seq + activations) + 4 * n_vocab * n_outputs
    return Estimate(
        n_layer=n_layer,
        gpu_layers=ngl,
        n_ctx=n_ctx,
        n_ctx_seq=n_ctx_seq,
        weights=sizes.total,
        weights_gpu=sizes.on_gpu(ngl),
        kv=kv,
        kv_gpu=kv_gpu,
        compute=compute,
    )


@dataclass(frozen=True)
class FitResult:
    """The verdict for one device: full offload, a partial ``-ngl``, or nothing fits."""

    budget: int  # bytes available to this model (free memory minus the reserve)
    needed: int  # bytes the whole model needs there (full offload, or all of it on a CPU)
    full: Estimate  # everything offloaded (GPU) / everything in host memory (CPU)
    suggested_layers: int  # the largest -ngl whose device part fits the budget
    suggested: Estimate
    on_gpu: bool = True

    @property
    def fits_fully(self) -> bool:
        return self.needed <= self.budget

    @property
    def verdict(self) -> str:
        if self.fits_fully:
            return "fits"
        return "partial" if self.suggested_layers > 0 else "does not fit"

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "needed": self.needed,
            "verdict": self.verdict,
            "fits": self.fits_fully,
            "suggested_layers": self.suggested_layers,
            "full": self.full.to_dict(),
            "suggested": self.suggested.to_dict(),
        }


def fit_gpu(info: ModelInfo, params: FitParams, free_bytes: int, reserve_bytes: int) -> FitResult:
    """The largest ``-ngl`` whose weights, KV and compute buffer fit ``free - reserve``."""
    n_layer = info.layers or 0
    sizes = tensor_sizes(info.path, n_layer) if n_layer else None
    budget = max(free_bytes - reserve_bytes, 0)
    full = estimate(info, params, n_layer + 1, sizes)
    best = 0
    for ngl in range(n_layer + 1, 0, -1):
        if estimate(info, params, ngl, sizes).device_total <= budget:
            best = ngl
            break
    return FitResult(budget, full.device_total, full, best, estimate(info, params, best, sizes))


def fit_host(info: ModelInfo, params: FitParams, available_bytes: int) -> FitResult:
    """CPU backend: weights, KV and compute buffer all in host memory, nothing offloaded."""
    est = estimate(info, params, 0)
    return FitResult(available_bytes, est.total, est, 0, est, on_gpu=False)


def mib(n: float) -> str:
    return f"{n / MiB:,.1f} MiB"
