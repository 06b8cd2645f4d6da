"""The tiny model generator without its extra installed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest


def test_tiny_model_generator_names_the_extra_when_gguf_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llama_orchestrator.testing.tinymodel import MissingExtra, write_tiny_model

    monkeypatch.setitem(sys.modules, "gguf", None)  # what an install without the extra sees
    with pytest.raises(MissingExtra, match=r"'demo' extra.*llama-orchestrator\[demo\]"):
        write_tiny_model(tmp_path / "m.gguf")
    assert not (tmp_path / "m.gguf").exists()
