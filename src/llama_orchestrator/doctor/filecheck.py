"""The files an instance uses: its model (``model``), the llama-server that runs it
(``binary``), its logs (``logs-writable``)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from llama_orchestrator.config.loader import LoadedConfig
from llama_orchestrator.doctor.modelfile import model_file_problem
from llama_orchestrator.doctor.verdict import Verdict
from llama_orchestrator.engine.command import log_paths
from llama_orchestrator.home import Home


def model_verdict(cfg: LoadedConfig) -> Verdict:
    """A GGUF model whose whole header reads (issue 10): the walker that ``fit`` uses finds
    a header cut short, and tensor data that ends before the tensors do (a partial
    download). Only the header is read, over an mmap."""
    from llama_orchestrator.models.fit import tensor_sizes
    from llama_orchestrator.models.header import GGUFError, read_model_info

    path = cfg.model_path
    reason = model_file_problem(path)
    if reason:
        return "error", f"model file {path} {reason}"
    try:
        info = read_model_info(path)
        tensor_sizes(path, info.layers or 0)
    except GGUFError as e:
        return "error", f"model file {path}: {str(e).removeprefix(f'{path}: ')}"
    size = info.file_size / 2**20
    return "ok", f"GGUF v{info.gguf_version} model {path} ({size:.1f} MiB)"


_FROM = {
    "config 'binary'": "from binary",
    "LLAMA_SERVER": "from LLAMA_SERVER",
    "home": "from the home's bin folder",
    "PATH": "found on PATH",
}


def binary_verdict(cfg: LoadedConfig, home: Home) -> Verdict:
    """The llama-server that would run ``cfg`` resolves and is executable (issue 10)."""
    from llama_orchestrator.engine.binary import BinaryError, resolve_binary

    try:
        found = resolve_binary(cfg.config.binary, home, config_file=cfg.path)
    except BinaryError as e:
        return "error", e.detail
    if found.path is None:
        if found.source == "embedded":
            why = "no llama-server in binary, LLAMA_SERVER, the home's bin folder or PATH"
            return "ok", f"embedded engine (xllamacpp): {why}"
        return "ok", f"embedded engine (xllamacpp), {_FROM[found.source]}"
    return "ok", f"{found.path} ({_FROM[found.source]}, executable)"


def server_log_paths(cfg: LoadedConfig, home: Home) -> list[Path]:
    """The files the server will write (the engine's answer), each once."""
    return list(dict.fromkeys(log_paths(cfg, home.root)))


def logs_verdict(paths: Iterable[Path]) -> Verdict:
    """Every log file can be written: the errors, or each distinct ok message."""
    results = [log_path_problem(p) for p in paths]
    errors = [msg for level, msg in results if level == "error"]
    if errors:
        return "error", "; ".join(errors)
    return "ok", "; ".join(dict.fromkeys(msg for _, msg in results))


def _folder_problem(path: Path) -> str | None:
    if not path.is_dir():
        return f"{path} is not a folder"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"{path} is not writable"
    return None


def log_path_problem(log_file: Path) -> Verdict:
    """Can ``log_file`` be appended to (creating its folders if needed)?"""
    if log_file.is_symlink():  # refused by the engine (issue 10): rotation would follow it
        return "error", (
            f"{log_file} is a symbolic link (to {os.readlink(log_file)}); the server refuses "
            "it, since rotation would truncate the file it points to: remove the link, or "
            "set logs.stdout/logs.stderr to the real path"
        )
    if log_file.is_dir():
        return "error", f"{log_file} is a folder, not a log file"
    if log_file.exists() and not os.access(log_file, os.W_OK):
        return "error", f"{log_file} is not writable"
    folder = log_file.parent
    if folder.exists():
        problem = _folder_problem(folder)
        if problem:
            return "error", f"log folder {problem}"
        return "ok", f"log folder {folder} is writable"
    parent = folder.parent
    while not parent.exists() and parent.parent != parent:
        parent = parent.parent
    problem = _folder_problem(parent)
    if problem:
        return "error", f"log folder {folder} cannot be created: {problem}"
    return "ok", f"log folder {folder} will be created (in {parent})"
