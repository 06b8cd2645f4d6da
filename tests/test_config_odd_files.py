"""A `config.json` that is not a file (a folder, a dangling link) is a broken config,
named with its path and the problem, never "no instances" (issue 19)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import Cli, free_port, write_config

from llama_orchestrator.home import Home


def test_a_config_json_that_is_a_folder_is_a_broken_config(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    path = home.config_path("odd")
    path.mkdir(parents=True)
    out = cli("config", "validate", "--all")
    assert out.returncode == 1, out.stderr
    assert f"{path}: (file): is a folder, not a file" in out.stderr

    write_config(home, "alpha", tiny_model, free_port())
    assert cli("daemon", "start").returncode == 0
    out = cli("ps", "--all")
    assert out.returncode == 0, out.stderr
    assert "note: odd: invalid config:" in out.stderr and "is a folder" in out.stderr
    up = cli("up", "odd")
    assert up.returncode != 0 and "is a folder" in up.stderr and "Traceback" not in up.stderr


@pytest.mark.skipif(os.name == "nt", reason="symlinks need privileges on Windows")
def test_a_dangling_config_link_names_its_target(cli: Cli, home: Home) -> None:
    path = home.config_path("odd")
    path.parent.mkdir(parents=True)
    path.symlink_to("/nowhere/config.json")
    out = cli("config", "validate", "--all")
    assert out.returncode == 1, out.stderr
    assert f"{path}: (file): is a link to /nowhere/config.json, which does not exist" in out.stderr
