"""Every config parse failure is a config problem, never a traceback (issue 10, items 8, 19).

Pathological files (a 5000-digit number, 100k nested brackets, a file of megabytes) and
duplicate keys are refused by the one door, :mod:`llama_orchestrator.config.loader`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Cli, free_port, write_config

from llama_orchestrator.config.loader import (
    MAX_CONFIG_BYTES,
    MAX_DEPTH,
    ConfigError,
    parse_config,
    parse_json,
)
from llama_orchestrator.home import Home


def _huge_number(model: Path) -> str:
    return f'{{"name": "bad", "model": {{"path": "{model}", "threads": {"9" * 5000}}}}}'


def _deep(model: Path) -> str:
    nested = "[" * 100_000 + "]" * 100_000
    return f'{{"name": "bad", "model": {{"path": "{model}"}}, "env": {nested}}}'


def _big(model: Path) -> str:
    padding = " " * (MAX_CONFIG_BYTES + 10)
    return f'{{"name": "bad", "model": {{"path": "{model}"}}}}{padding}'


KINDS = {"huge-number": _huge_number, "deep-nesting": _deep, "over-1-mib": _big}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_pathological_config_is_a_config_problem(
    kind: str, tmp_path: Path, tiny_model: Path
) -> None:
    path = tmp_path / "bad" / "config.json"
    text = KINDS[kind](tiny_model)
    with pytest.raises(ConfigError) as e:
        parse_config(text, path)
    (problem,) = e.value.problems
    assert problem.file == str(path)
    assert "\n" not in str(problem) and len(str(problem)) < 300, str(problem)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_pathological_config_through_the_cli(
    kind: str, cli: Cli, home: Home, tiny_model: Path
) -> None:
    write_config(home, "good", tiny_model, free_port())
    bad = home.config_path("bad")
    bad.parent.mkdir(parents=True)
    bad.write_text(KINDS[kind](tiny_model))

    out = cli("config", "validate", "bad")
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.startswith(f"{bad}: "), out.stderr

    out = cli("config", "lint", "--format", "json")
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    rows = [r for r in json.loads(out.stdout) if r["instance"] == "bad"]
    assert rows and rows[0]["level"] == "error", rows

    out = cli("describe", "bad")
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    assert str(bad) in out.stderr, out.stderr

    out = cli("create", "other", "--model", str(tiny_model))
    assert out.returncode == 0, out.stderr

    out = cli("ps")
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr


def test_pathological_config_does_not_kill_the_daemon(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    write_config(home, "good", tiny_model, free_port(), autostart=True)
    for name, make in (("deep", _deep), ("huge", _huge_number)):
        path = home.config_path(name)
        path.parent.mkdir(parents=True)
        path.write_text(make(tiny_model).replace('"bad"', f'"{name}"'))
    out = cli("daemon", "start", timeout=60)
    assert out.returncode == 0, out.stderr
    out = cli("daemon", "status")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Traceback" not in home.daemon_log_path.read_text()


def test_depth_limit_allows_ordinary_nesting() -> None:
    ok = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert parse_json(ok, "f.json") is not None
    brackets_in_strings = json.dumps({"args": ["[" * 10_000]})
    assert parse_json(brackets_in_strings, "f.json") == {"args": ["[" * 10_000]}
    with pytest.raises(ConfigError, match=f"nested deeper than {MAX_DEPTH}"):
        parse_json("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "f.json")


def test_duplicate_json_keys_are_a_config_problem(tmp_path: Path, tiny_model: Path) -> None:
    path = tmp_path / "dup" / "config.json"
    text = (
        f'{{"name": "dup", "model": {{"path": "{tiny_model}"}},\n'
        ' "server": {"port": 8001, "port": 8002}}'
    )
    with pytest.raises(ConfigError) as e:
        parse_config(text, path)
    (problem,) = e.value.problems
    assert (problem.file, problem.field) == (str(path), "server.port")
    assert "duplicate key" in problem.message, problem
    with pytest.raises(ConfigError, match=r"args\[0\]\.x: duplicate key"):
        parse_json('{"args": [{"x": 1, "x": 1}]}', "f.json")


def test_duplicate_json_keys_through_validate(cli: Cli, home: Home, tiny_model: Path) -> None:
    path = write_config(home, "dup", tiny_model, free_port())
    path.write_text(path.read_text().replace('"name": "dup",', '"name": "dup", "name": "dup",'))
    out = cli("config", "validate", "dup")
    assert out.returncode == 1, out.stderr
    assert f"{path}: name: duplicate key" in out.stderr, out.stderr


def test_pathological_template_is_a_template_problem(home: Home) -> None:
    from llama_orchestrator.templates import load_templates, templates_dir

    folder = templates_dir(home)
    folder.mkdir(parents=True)
    (folder / "deep.json").write_text('{"args": ' + "[" * 100_000 + "]" * 100_000 + "}")
    (folder / "twice.json").write_text('{"gpu": {"layers": 1, "layers": 2}}')
    found, problems = load_templates(home)
    assert "deep" not in found and "twice" not in found
    assert "nested deeper" in problems["deep"], problems
    assert "gpu.layers: duplicate key" in problems["twice"], problems
