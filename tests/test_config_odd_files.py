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


@pytest.mark.skipif(os.name == "nt", reason="symlinks need privileges on Windows")
def test_a_dangling_gateway_json_link_fails_validation(cli: Cli, home: Home) -> None:
    home.root.mkdir(parents=True, exist_ok=True)
    home.gateway_path.symlink_to("/nowhere/gateway.json")
    out = cli("config", "validate", "--all")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "is a link to /nowhere/gateway.json, which does not exist" in out.stderr
    lint = cli("config", "lint", "--all")
    assert lint.returncode == 1 and "/nowhere/gateway.json" in lint.stdout + lint.stderr


def test_a_gateway_json_that_is_not_utf8_says_so(cli: Cli, home: Home) -> None:
    home.root.mkdir(parents=True, exist_ok=True)
    home.gateway_path.write_bytes(b'{"port": 8080, "host": "\xff"}')
    out = cli("config", "validate", "--all")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "is not UTF-8 text (byte 0xff at offset 24): save it as UTF-8 JSON" in out.stderr
    assert "codec" not in out.stderr and "Traceback" not in out.stderr
