"""The GGUF header reader behind ``describe``: right facts, header only, clear errors."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
from conftest import Cli, free_port, write_config

from llama_orchestrator.home import Home
from llama_orchestrator.models.header import FILE_TYPES, GGUFError, human_count, read_model_info


def test_tiny_model_facts_match_the_gguf_package(tiny_model: Path) -> None:
    info = read_model_info(tiny_model)
    reader = gguf.GGUFReader(str(tiny_model))
    assert info.parameters == sum(int(t.n_elements) for t in reader.tensors)
    assert info.tensor_count == len(reader.tensors)
    assert (info.architecture, info.name, info.quantization) == ("llama", "tiny-test", "F32")
    assert (info.layers, info.context_length, info.embedding_length) == (2, 2048, 64)
    assert (info.head_count, info.head_count_kv) == (4, 4)
    assert info.file_size == tiny_model.stat().st_size
    assert "tokenizer.ggml.tokens" not in info.metadata  # arrays are skipped, not loaded


def test_file_type_names_mirror_the_gguf_enum() -> None:
    expected = {
        m.value: m.name.removeprefix("MOSTLY_").removeprefix("ALL_") for m in gguf.LlamaFileType
    }
    assert expected == FILE_TYPES


def test_big_vocabulary_and_nested_arrays_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "vocab.gguf"
    w = gguf.GGUFWriter(str(path), "qwen2")
    w.add_block_count(3)
    w.add_context_length(32768)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_K_M)
    tokens = [f"tok{i}" for i in range(50_000)]
    w.add_token_list(tokens)
    w.add_token_merges([f"a{i} b{i}" for i in range(50_000)])
    w.add_token_scores([0.0] * len(tokens))
    w.add_array("test.nested", [[1, 2], [3, 4, 5]])
    w.add_tensor("a.weight", np.zeros((7, 11), dtype=np.float32))
    w.add_tensor("b.weight", np.zeros((3, 5, 2), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    info = read_model_info(path)
    assert info.parameters == 7 * 11 + 3 * 5 * 2
    assert (info.architecture, info.layers, info.context_length) == ("qwen2", 3, 32768)
    assert info.quantization == "Q4_K_M"


def test_bad_files_give_clear_errors(tiny_model: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_model.read_bytes()[:3000])
    with pytest.raises(GGUFError, match="truncated GGUF header"):
        read_model_info(cut)
    text = tmp_path / "text.gguf"
    text.write_text("definitely not a model, just some text")
    with pytest.raises(GGUFError, match="not a GGUF file"):
        read_model_info(text)
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(GGUFError, match="not a GGUF file"):
        read_model_info(empty)
    with pytest.raises(GGUFError, match="cannot read"):
        read_model_info(tmp_path / "absent.gguf")


def test_human_counts() -> None:
    assert human_count(115_392) == "115.4K"
    assert human_count(7_241_732_096) == "7.2B"
    assert human_count(270_000_000) == "270M"
    assert human_count(12) == "12"


def test_describe_shows_model_facts_and_survives_a_truncated_model(
    cli: Cli, home: Home, tiny_model: Path, tmp_path: Path
) -> None:
    write_config(home, "alpha", tiny_model, free_port())
    data = cli.json("describe", "alpha", "--json")
    assert data["model_info"]["parameters"] == 115_392
    assert data["model_info"]["quantization"] == "F32"
    text = cli("describe", "alpha").stdout
    assert "llama, 115.4K parameters, F32, 2 layers, trained context 2048" in text
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_model.read_bytes()[:3000])
    write_config(home, "broken", cut, free_port())
    out = cli("describe", "broken")
    assert out.returncode == 0, out.stderr
    assert "truncated GGUF header" in out.stdout
    assert "Traceback" not in out.stderr
