"""An alias never pools different model files (issue 19, item 10): `config validate`
refuses it, naming the file, the alias, the other instance and the fix; `config lint`
shows it as its `aliases` row. Replicas of one model file still pool."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import Cli, free_port, write_config

from llama_orchestrator.home import Home


def test_an_alias_that_is_another_instances_name_is_refused(
    cli: Cli, home: Home, tiny_model: Path, tmp_path: Path
) -> None:
    other_model = tmp_path / "other.gguf"
    shutil.copy(tiny_model, other_model)
    write_config(home, "gemma", other_model, free_port())
    tiny = write_config(home, "tiny", tiny_model, free_port(), gateway={"aliases": ["gemma"]})
    out = cli("config", "validate", "--all")
    assert out.returncode == 1
    line = next(x for x in out.stderr.splitlines() if "gateway.aliases" in x)
    assert line.startswith(f"{tiny}: gateway.aliases: is the name of instance 'gemma'")
    assert "another model file" in line and "rename the alias" in line and "'gemma'" in line

    rows = json.loads(cli("config", "lint", "--format", "json").stdout)
    row = next(r for r in rows if r["instance"] == "tiny" and r["check"] == "aliases")
    assert row["level"] == "error" and "'gemma'" in row["message"]


def test_one_alias_on_two_models_is_refused_and_replicas_pool(
    cli: Cli, home: Home, tiny_model: Path, tmp_path: Path
) -> None:
    other_model = tmp_path / "other.gguf"
    shutil.copy(tiny_model, other_model)
    write_config(home, "r1", tiny_model, free_port(), gateway={"aliases": ["pool"]})
    write_config(home, "r2", tiny_model, free_port(), gateway={"aliases": ["pool"]})
    assert cli("config", "validate", "--all").returncode == 0  # one model: a pool

    odd = write_config(home, "odd", other_model, free_port(), gateway={"aliases": ["pool"]})
    out = cli("config", "validate", "odd")
    assert out.returncode == 1
    assert f"{odd}: gateway.aliases: is also an alias of instance 'r1'" in out.stderr
    assert "give each model its own alias ('pool')" in out.stderr
