"""A GGUF of any llama shape whose tensor data is a hole: the header and tensor infos are
real, the data region is a sparse extent of zeros (no disk space, written in
milliseconds). ``models/fit.py`` reads only the header, so estimates for a 2 GB model
recorded on a GPU can be checked on any machine (issue 18). Not for loading into a
server: its weights would be zeros.

The tensors are those of ``write_tiny_model`` (and of the models the H200 recordings were
made with): F16 matrices, F32 norms, a 259-token byte vocabulary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llama_orchestrator.testing.tinymodel import MissingExtra

N_VOCAB = 259


def write_shaped_gguf(
    path: str | Path,
    n_layer: int,
    n_embd: int,
    n_ff: int,
    n_head: int,
    n_head_kv: int,
    n_ctx: int,
) -> Path:
    """Write the sparse model; returns ``path``."""
    try:
        import gguf
        import numpy as np
    except ImportError as e:
        raise MissingExtra(e.name or "gguf") from e

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    head = n_embd // n_head
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(f"shaped-{n_layer}x{n_embd}")
    w.add_context_length(n_ctx)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_tokenizer_model("llama")
    tokens = [b"<unk>", b"<s>", b"</s>"] + [f"<0x{i:02X}>".encode() for i in range(256)]
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * N_VOCAB)
    w.add_token_types([gguf.TokenType.CONTROL] * 3 + [gguf.TokenType.BYTE] * 256)
    f16, f32 = np.dtype(np.float16), np.dtype(np.float32)
    sizes: list[int] = []

    def info(name: str, shape: tuple[int, ...], dtype: np.dtype[Any]) -> None:
        nbytes = int(np.prod(shape)) * dtype.itemsize
        w.add_tensor_info(name, shape, dtype, nbytes)
        sizes.append(nbytes)

    info("token_embd.weight", (N_VOCAB, n_embd), f16)
    for i in range(n_layer):
        p = f"blk.{i}."
        info(p + "attn_norm.weight", (n_embd,), f32)
        info(p + "attn_q.weight", (n_embd, n_embd), f16)
        info(p + "attn_k.weight", (n_head_kv * head, n_embd), f16)
        info(p + "attn_v.weight", (n_head_kv * head, n_embd), f16)
        info(p + "attn_output.weight", (n_embd, n_embd), f16)
        info(p + "ffn_norm.weight", (n_embd,), f32)
        info(p + "ffn_gate.weight", (n_ff, n_embd), f16)
        info(p + "ffn_up.weight", (n_ff, n_embd), f16)
        info(p + "ffn_down.weight", (n_embd, n_ff), f16)
    info("output_norm.weight", (n_embd,), f32)
    info("output.weight", (N_VOCAB, n_embd), f16)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    align = int(gguf.GGUF_DEFAULT_ALIGNMENT)

    def pad(n: int) -> int:
        return -(-n // align) * align

    with open(path, "r+b") as f:
        f.truncate(pad(f.seek(0, 2)) + sum(pad(n) for n in sizes))
    return path
