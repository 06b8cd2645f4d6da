"""Config templates and ``create --template`` (issue 5, part 3)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli

from llama_orchestrator.config.loader import load_instance
from llama_orchestrator.config.schema import InstanceConfig
from llama_orchestrator.home import Home
from llama_orchestrator.templates import (
    BUILTIN,
    TemplateError,
    check_overlay,
    get_template,
    load_templates,
    merge,
    templates_dir,
)


def read_config(home: Home, name: str) -> dict[str, Any]:
    data = json.loads(home.config_path(name).read_text())
    assert isinstance(data, dict)
    return data


def write_template(home: Home, name: str, data: Any) -> Path:
    path = templates_dir(home) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_builtins_are_valid_overlays(home: Home) -> None:
    found, problems = load_templates(home)
    assert problems == {}
    assert set(BUILTIN) == {"cpu", "vulkan", "cuda", "metal"} <= set(found)
    for name in BUILTIN:
        t = found[name]
        assert t.source == "built-in"
        assert t.overlay["gpu"]["backend"] == name
        config = merge({"name": "xx", "model": {"path": "m.gguf"}}, t.overlay)
        InstanceConfig.model_validate(config)
    assert found["cpu"].overlay["gpu"]["layers"] == 0
    for gpu in ("vulkan", "cuda", "metal"):
        assert found[gpu].overlay["gpu"]["layers"] == 999


def test_merge_is_deep_and_pure() -> None:
    base = {"model": {"path": "a", "threads": 8}, "args": ["x"]}
    out = merge(base, {"model": {"threads": 2}, "args": ["y"]})
    assert out == {"model": {"path": "a", "threads": 2}, "args": ["y"]}
    assert base == {"model": {"path": "a", "threads": 8}, "args": ["x"]}


@pytest.mark.parametrize(
    ("overlay", "message"),
    [
        ({"name": "x"}, "name: a template cannot set it"),
        ({"model": {"path": "x.gguf"}}, "model.path: a template cannot set it"),
        ({"server": {"port": 9000}}, "server.port: a template cannot set it"),
        ({"gpu": {"backend": "rocm"}}, "gpu.backend"),
        ({"gpu": {"layers": "10"}}, "gpu.layers"),
        ({"colour": "blue"}, "colour"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_bad_overlays(overlay: Any, message: str) -> None:
    with pytest.raises(TemplateError, match=message.replace(".", r"\.")):
        check_overlay(overlay, "t.json")


def test_user_templates_load_and_shadow(home: Home) -> None:
    write_template(
        home,
        "big-gpu",
        {"description": "my 7900 XTX", "gpu": {"backend": "vulkan", "device_id": 1, "layers": 60}},
    )
    write_template(home, "cuda", {"gpu": {"backend": "cuda", "layers": 20}})
    write_template(home, "broken", "{not json")
    write_template(home, "Bad_Name", {})
    found, problems = load_templates(home)
    assert found["big-gpu"].description == "my 7900 XTX"
    assert found["big-gpu"].overlay == {"gpu": {"backend": "vulkan", "device_id": 1, "layers": 60}}
    assert found["cuda"].overlay["gpu"]["layers"] == 20  # the home's file replaces the built-in
    assert set(problems) == {"broken", "Bad_Name"}
    assert "invalid JSON" in problems["broken"]
    with pytest.raises(TemplateError, match="template 'broken' is invalid"):
        get_template(home, "broken")


def test_unknown_template_lists_available(home: Home) -> None:
    with pytest.raises(TemplateError) as e:
        get_template(home, "rocm")
    assert "unknown template 'rocm'; available: cpu, cuda, metal, vulkan" in str(e.value)


# --- through the CLI ----------------------------------------------------------------------


def test_create_with_template(cli: Cli, tiny_model: Path) -> None:
    out = cli("create", "gpu-a", "--model", str(tiny_model), "--template", "vulkan")
    assert out.returncode == 0, out.stderr
    assert "template vulkan" in out.stderr
    data = read_config(cli.home, "gpu-a")
    assert data["gpu"] == {"backend": "vulkan", "device_id": 0, "layers": 999}
    assert data["model"]["context_size"] == 8192
    assert data["healthcheck"]["start_period"] == 180
    assert load_instance(cli.home, "gpu-a").config.gpu.backend == "vulkan"


def test_options_override_template(cli: Cli, tiny_model: Path) -> None:
    write_template(
        cli.home, "lan", {"server": {"host": "0.0.0.0"}, "model": {"threads": 3}, "args": ["-fa"]}
    )
    args = ["create", "cc", "--model", str(tiny_model), "--template", "cuda", "--ctx", "1024"]
    assert cli(*args, "--threads", "2").returncode == 0
    data = read_config(cli.home, "cc")
    assert data["model"]["context_size"] == 1024
    assert data["model"]["threads"] == 2
    assert data["gpu"]["backend"] == "cuda"
    out = cli("create", "dd", "--model", str(tiny_model), "--template", "lan", "--host", "::1")
    assert out.returncode == 0, out.stderr
    data = read_config(cli.home, "dd")
    assert data["server"]["host"] == "::1"
    assert data["model"]["threads"] == 3
    assert data["args"] == ["-fa"]
    assert cli("create", "ee", "--model", str(tiny_model), "--template", "lan").returncode == 0
    assert read_config(cli.home, "ee")["server"]["host"] == "0.0.0.0"


def test_create_unknown_template_is_usage_error(cli: Cli, tiny_model: Path) -> None:
    out = cli("create", "xx", "--model", str(tiny_model), "--template", "rocm")
    assert out.returncode == 2
    assert "unknown template 'rocm'" in out.stderr
    assert "cpu, cuda, metal, vulkan" in out.stderr
    assert "Traceback" not in out.stderr
    assert not cli.home.config_path("xx").exists()


def test_create_broken_template_fails(cli: Cli, tiny_model: Path) -> None:
    write_template(cli.home, "mine", {"gpu": {"layers": -1}})
    out = cli("create", "xx", "--model", str(tiny_model), "--template", "mine")
    assert out.returncode == 1
    assert "template 'mine' is invalid" in out.stderr and "gpu.layers" in out.stderr
    assert "Traceback" not in out.stderr


def test_templates_command(cli: Cli) -> None:
    write_template(cli.home, "mine", {"description": "own", "gpu": {"backend": "metal"}})
    write_template(cli.home, "broken", "[")
    out = cli("templates")
    assert out.returncode == 0, out.stderr
    names = [line.split()[0] for line in out.stdout.splitlines()]
    assert names == ["cpu", "vulkan", "cuda", "metal", "mine"]
    assert "warning:" in out.stderr and "broken.json" in out.stderr
    data = cli.json("templates", "--json")
    assert [t["name"] for t in data] == names
    mine = data[-1]
    assert mine["source"].endswith("mine.json") and mine["config"] == {"gpu": {"backend": "metal"}}
