"""``config lint``'s ``kv-cache`` row (issue 21): can the instance's slots be saved and
reused? Its slot save folder must be writable, and a model with sliding-window attention
layers (Gemma 2 and 3, and others whose GGUF names ``<arch>.attention.sliding_window``)
keeps its whole history in those layers only with ``--swa-full``. Without it, reuse
depends on the server's own sliding-window checkpoints (current llama.cpp builds keep a
few; older ones none, and then a restored slot answers ``cache_n`` 0), and the saved
files were 2.4-3.8x larger in bench/bench_conversation.py."""

from __future__ import annotations

import os
from pathlib import Path

from llama_orchestrator.config.loader import LoadedConfig
from llama_orchestrator.doctor.verdict import Verdict
from llama_orchestrator.engine.command import slot_save_dir
from llama_orchestrator.home import Home


def kv_verdict(cfg: LoadedConfig, home: Home) -> Verdict:
    c = cfg.config
    if c.gateway.kv_cache is False:
        return "ok", "off (gateway.kv_cache: false): a swap loses its conversations"
    folder = slot_save_dir(cfg, home.root)
    if folder is None:
        return "ok", "off: the server runs with --no-slots"
    problem = _unwritable(folder)
    if problem is not None:
        return "error", (
            f"args --slot-save-path {folder}: {problem}; point it at a writable folder, "
            "or set gateway.kv_cache to false"
        )
    arch = _sliding_window_arch(cfg.model_path)
    if arch is not None and "--swa-full" not in c.args:
        return "warning", (
            f"the model ({arch}) has sliding-window attention layers: without '--swa-full' "
            "in args a restored slot is reused only through the server's own window "
            "checkpoints (none on older llama.cpp builds: cache_n 0); add it (its KV "
            "cache then holds the full context), or set gateway.kv_cache to false"
        )
    return "ok", f"slots saved in {folder} before a stop, restored at the next start"


def _unwritable(folder: Path) -> str | None:
    """Why the server could not write its slot files into ``folder`` (made if missing)."""
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable"
    return None


def _sliding_window_arch(model: Path) -> str | None:
    """The model's architecture when its GGUF says it uses sliding-window attention."""
    from llama_orchestrator.models.header import GGUFError, read_model_info

    try:
        info = read_model_info(model)
    except (GGUFError, OSError):
        return None  # the model row says what is wrong with the file
    arch = info.architecture
    if arch and info.metadata.get(f"{arch}.attention.sliding_window"):
        return arch
    return None
