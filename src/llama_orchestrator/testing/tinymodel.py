"""Write a tiny but real llama-architecture GGUF model (about 470 KB).

2 layers, 64 embedding dims, 4 heads, 128 FFN, an SPM tokenizer of 259 tokens
(``<unk>``, ``<s>``, ``</s>`` and the 256 byte tokens), random f32 weights. llama-server
loads it in tens of milliseconds and answers completions with random bytes: enough to
exercise every part of the orchestrator without downloading a model.

    python -m llama_orchestrator.testing.tinymodel OUT.gguf

It needs the ``gguf`` and ``numpy`` packages, which nothing else of llama-orchestrator
uses: they come with the ``demo`` extra (``pip install 'llama-orchestrator[demo]'``;
the ``test`` extra includes it).
"""

from __future__ import annotations

import sys
from pathlib import Path

from llama_orchestrator.errors import OrchestratorError


class MissingExtra(OrchestratorError, ImportError):
    """The generator's packages are not installed; the message says how to get them."""

    def __init__(self, module: str) -> None:
        super().__init__(
            f"the tiny model generator needs the {module!r} package, which comes with the "
            "'demo' extra: pip install 'llama-orchestrator[demo]' (or pip install -e '.[demo]' "
            "in a checkout)",
            name=module,
        )


def write_tiny_model(
    path: str | Path,
    seed: int = 0,
    context_length: int = 2048,
    *,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 4,
    n_head_kv: int | None = None,
    n_ff: int = 128,
    f16: bool = False,
) -> Path:
    """Write the model; the keywords make bigger variants (e.g. grouped-query attention
    with ``n_head_kv < n_head``, f16 weights) for tests that need them."""
    try:
        import gguf
        import numpy as np
    except ImportError as e:
        raise MissingExtra(e.name or "gguf") from e

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_kv = n_head if n_head_kv is None else n_head_kv
    head = n_embd // n_head
    weight_type = np.float16 if f16 else np.float32
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-test")
    w.add_context_length(context_length)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(head)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if f16 else gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    tokens = [b"<unk>", b"<s>", b"</s>"] + [f"<0x{i:02X}>".encode() for i in range(256)]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    types += [gguf.TokenType.BYTE] * 256
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * len(tokens))
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)

    def rand(name: str, shape: tuple[int, ...]) -> None:
        w.add_tensor(name, (rng.standard_normal(shape) * 0.02).astype(weight_type))

    def ones(name: str) -> None:
        w.add_tensor(name, np.ones(n_embd, dtype=np.float32))

    rand("token_embd.weight", (len(tokens), n_embd))
    ones("output_norm.weight")
    rand("output.weight", (len(tokens), n_embd))
    for i in range(n_layer):
        ones(f"blk.{i}.attn_norm.weight")
        rand(f"blk.{i}.attn_q.weight", (n_embd, n_embd))
        rand(f"blk.{i}.attn_k.weight", (n_kv * head, n_embd))
        rand(f"blk.{i}.attn_v.weight", (n_kv * head, n_embd))
        rand(f"blk.{i}.attn_output.weight", (n_embd, n_embd))
        ones(f"blk.{i}.ffn_norm.weight")
        rand(f"blk.{i}.ffn_gate.weight", (n_ff, n_embd))
        rand(f"blk.{i}.ffn_up.weight", (n_ff, n_embd))
        rand(f"blk.{i}.ffn_down.weight", (n_embd, n_ff))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m llama_orchestrator.testing.tinymodel OUT.gguf", file=sys.stderr)
        raise SystemExit(2)
    try:
        print(write_tiny_model(sys.argv[1]))
    except MissingExtra as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
