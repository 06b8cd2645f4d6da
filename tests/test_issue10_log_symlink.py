"""Issue 10, item 10: a log path that is a symbolic link is refused, never followed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import Cli, free_port, write_config

from llama_orchestrator.config.loader import load_file
from llama_orchestrator.engine.command import log_paths
from llama_orchestrator.home import Home


@pytest.mark.skipif(os.name == "nt", reason="symbolic links need privileges on Windows")
def test_issue10_up_refuses_a_symlinked_log_file(
    cli: Cli, home: Home, tiny_model: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("not a log\n")
    write_config(home, "alpha", tiny_model, free_port())
    out_log, _ = log_paths(load_file(home.config_path("alpha")), home.root)
    out_log.parent.mkdir(parents=True)
    out_log.symlink_to(outside)

    out = cli("up", "alpha", timeout=60)
    assert out.returncode != 0, out.stderr
    assert "Traceback" not in out.stderr
    assert f"{out_log}: it is a symbolic link" in out.stderr, out.stderr
    assert outside.read_text() == "not a log\n"
    assert out_log.is_symlink()
