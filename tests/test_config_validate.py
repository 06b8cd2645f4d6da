"""``llama-orch config validate`` and ``config schema`` (issue 2, parts 3, 4 and 10), plus
the model-file check they rest on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Cli, free_port, write_config

from llama_orchestrator.config.loader import ConfigError, parse_config
from llama_orchestrator.config.schema import InstanceGateway
from llama_orchestrator.doctor.modelfile import model_file_problem
from llama_orchestrator.home import Home


def problem_lines(out: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in out.stderr.splitlines() if not line.startswith("error:")]


def test_validate_good_configs_exit_0(cli: Cli, home: Home, tiny_model: Path) -> None:
    write_config(home, "alpha", tiny_model, free_port())
    write_config(home, "beta", tiny_model, free_port())
    out = cli("config", "validate", "--all")
    assert out.returncode == 0, out.stderr
    assert "2 config(s) valid" in out.stderr
    assert out.stdout == ""


def test_corrupt_json_names_line_and_column(cli: Cli, home: Home) -> None:
    path = home.config_path("alpha")
    path.parent.mkdir(parents=True)
    path.write_text('{\n  "name": "alpha",\n  "model": {"path": "x.gguf",}\n}\n')
    out = cli("config", "validate", "alpha")
    assert out.returncode == 1
    assert f"{path}: (json): invalid JSON at line 3, column 30" in out.stderr


def test_unknown_field_is_named(cli: Cli, home: Home, tiny_model: Path) -> None:
    path = write_config(home, "alpha", tiny_model, free_port(), modle={"path": "typo.gguf"})
    out = cli("config", "validate", "alpha")
    assert out.returncode == 1
    assert f"{path}: modle: unknown field" in out.stderr


def test_nested_unknown_field_is_named(cli: Cli, home: Home, tiny_model: Path) -> None:
    write_config(home, "alpha", tiny_model, free_port(), server={"prot": 9000})
    out = cli("config", "validate", "alpha")
    assert out.returncode == 1
    assert ": server.prot: unknown field" in out.stderr


def test_missing_model(cli: Cli, home: Home, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "model.gguf"
    path = write_config(home, "alpha", missing, free_port())
    out = cli("config", "validate", "alpha")
    assert out.returncode == 1
    assert problem_lines(out) == [f"{path}: model.path: model file does not exist ({missing})"]


def test_relative_model_path_resolves_against_config_folder(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    models = home.root / "models"
    models.mkdir(parents=True)
    (models / "x.gguf").write_bytes(tiny_model.read_bytes())
    write_config(home, "alpha", Path("../../models/x.gguf"), free_port())
    assert cli("config", "validate", "alpha").returncode == 0
    (models / "x.gguf").unlink()
    out = cli("config", "validate", "alpha")
    assert out.returncode == 1
    assert f"model file does not exist ({models / 'x.gguf'})" in out.stderr


def test_non_gguf_model(cli: Cli, home: Home, tmp_path: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 a zip file, not a model")
    write_config(home, "alpha", fake, free_port())
    out = cli("config", "validate", "alpha")
    assert out.returncode == 1
    assert "model file is not a GGUF file (starts with b'PK\\x03\\x04')" in out.stderr


def test_two_instances_on_one_port(cli: Cli, home: Home, tiny_model: Path) -> None:
    port = free_port()
    a = write_config(home, "alpha", tiny_model, port)
    b = write_config(home, "beta", tiny_model, port)
    out = cli("config", "validate", "--all")
    assert out.returncode == 1
    lines = problem_lines(out)
    used = f"server.port: 127.0.0.1:{port} is also used by instance"
    assert f"{a}: {used} 'beta' ({b}) ({port})" in lines
    assert f"{b}: {used} 'alpha' ({a}) ({port})" in lines
    # validating one of them still sees the other instance of the home
    assert cli("config", "validate", "alpha").returncode == 1


def test_wildcard_host_clashes_with_loopback(cli: Cli, home: Home, tiny_model: Path) -> None:
    port = free_port()
    write_config(home, "alpha", tiny_model, port, server={"host": "0.0.0.0"})
    write_config(home, "beta", tiny_model, port)
    out = cli("config", "validate", "beta")
    assert out.returncode == 1
    assert "is also used by instance 'alpha'" in out.stderr


def test_unknown_instance_lists_known(cli: Cli, home: Home, tiny_model: Path) -> None:
    write_config(home, "alpha", tiny_model, free_port())
    out = cli("config", "validate", "nope")
    assert out.returncode == 1
    assert "no instance named 'nope' (known: alpha)" in out.stderr


@pytest.mark.parametrize("bad", ["Gemma", "a/b", "..", "../alpha", "alpha/../beta"])
def test_bad_names_are_usage_errors(cli: Cli, home: Home, tiny_model: Path, bad: str) -> None:
    write_config(home, "alpha", tiny_model, free_port())
    out = cli("config", "validate", bad)
    assert out.returncode == 2
    assert f"invalid instance name {bad!r}" in out.stderr


def test_name_must_equal_folder(cli: Cli, home: Home, tiny_model: Path) -> None:
    path = write_config(home, "alpha", tiny_model, free_port())
    path.write_text(path.read_text().replace('"name": "alpha"', '"name": "beta"'))
    out = cli("config", "validate", "alpha")
    assert out.returncode == 1
    assert f"{path}: name: must equal its folder's name 'alpha'" in out.stderr


def test_string_where_int_expected(cli: Cli, home: Home, tiny_model: Path) -> None:
    path = write_config(home, "alpha", tiny_model, 8001, server={"port": "8001"})
    out = cli("config", "validate", "alpha")
    assert out.returncode == 1
    assert f"{path}: server.port: Input should be a valid integer ('8001')" in out.stderr


def test_out_of_range_value(cli: Cli, home: Home, tiny_model: Path) -> None:
    write_config(home, "alpha", tiny_model, 80)
    out = cli("config", "validate", "alpha")
    assert out.returncode == 1
    assert "server.port: Input should be greater than or equal to 1024 (80)" in out.stderr


def test_every_problem_on_its_own_line(cli: Cli, home: Home, tiny_model: Path) -> None:
    path = write_config(
        home, "alpha", tiny_model, 8001, server={"port": "x", "parallel": 99}, extra=1
    )
    out = cli("config", "validate", "alpha")
    assert out.returncode == 1
    lines = problem_lines(out)
    assert len(lines) == 3
    assert all(line.startswith(f"{path}: ") for line in lines)


def test_validate_needs_a_target(cli: Cli) -> None:
    out = cli("config", "validate")
    assert out.returncode == 2
    assert "--all" in out.stderr


def test_validate_file_outside_home(cli: Cli, tmp_path: Path, tiny_model: Path) -> None:
    cfg = tmp_path / "draft.json"
    cfg.write_text(json.dumps({"name": "draft", "model": {"path": str(tiny_model)}}))
    out = cli("config", "validate", "--file", str(cfg))
    assert out.returncode == 0, out.stderr
    out = cli("config", "validate", "--file", str(tmp_path / "absent.json"))
    assert out.returncode == 1
    assert "no such file" in out.stderr


def test_validate_bad_config_disturbs_nothing(cli: Cli, home: Home, tiny_model: Path) -> None:
    path = home.config_path("alpha")
    path.parent.mkdir(parents=True)
    path.write_text("{ not json")
    before = sorted(p.relative_to(home.root) for p in home.root.rglob("*"))
    assert cli("config", "validate", "alpha").returncode == 1
    assert sorted(p.relative_to(home.root) for p in home.root.rglob("*")) == before
    assert path.read_text() == "{ not json"


# --- the gateway section ------------------------------------------------------------------


def parse_gateway_section(tmp_path: Path, section: object) -> InstanceGateway:
    data = {"name": "alpha", "model": {"path": "x.gguf"}, "gateway": section}
    return parse_config(
        json.dumps(data), tmp_path / "alpha" / "config.json", "alpha"
    ).config.gateway


def gateway_section_problem(tmp_path: Path, section: object) -> tuple[str, str, str | None]:
    with pytest.raises(ConfigError) as info:
        parse_gateway_section(tmp_path, section)
    [p] = info.value.problems
    return p.field, p.message, p.value


def test_gateway_section_defaults(tmp_path: Path) -> None:
    data = {"name": "alpha", "model": {"path": "x.gguf"}}
    cfg = parse_config(json.dumps(data), tmp_path / "config.json").config
    assert cfg.gateway == InstanceGateway()
    g = cfg.gateway
    assert (g.aliases, g.on_demand, g.ttl, g.pinned, g.priority) == ([], True, None, False, 0)


def test_gateway_section_read(tmp_path: Path) -> None:
    g = parse_gateway_section(
        tmp_path,
        {
            "aliases": ["gpt-4o", "org/model:q4"],
            "on_demand": False,
            "ttl": 0,
            "pinned": True,
            "priority": -100,
        },
    )
    assert (g.aliases, g.on_demand, g.ttl, g.pinned, g.priority) == (
        ["gpt-4o", "org/model:q4"],
        False,
        0,
        True,
        -100,
    )
    assert parse_gateway_section(tmp_path, {"ttl": None, "priority": 100}).ttl is None


@pytest.mark.parametrize(
    ("section", "field", "message"),
    [
        ({"aliases": [""]}, "gateway.aliases[0]", "an alias must not be empty"),
        ({"aliases": ["a" * 129]}, "gateway.aliases[0]", "at most 128 characters"),
        ({"aliases": ["ok", "two words"]}, "gateway.aliases[1]", "must not contain whitespace"),
        ({"aliases": ["tab\there"]}, "gateway.aliases[0]", "must not contain whitespace"),
        ({"aliases": ["/v1/models"]}, "gateway.aliases[0]", "must not start with '/'"),
        ({"aliases": ["same", "same"]}, "gateway.aliases", "alias 'same' is listed twice"),
        ({"aliases": [3]}, "gateway.aliases[0]", "valid string"),
        ({"aliases": "gpt-4o"}, "gateway.aliases", "valid list"),
        ({"on_demand": "true"}, "gateway.on_demand", "valid boolean"),
        ({"ttl": -1}, "gateway.ttl", "greater than or equal to 0"),
        ({"ttl": 1.5}, "gateway.ttl", "valid integer"),
        ({"pinned": 1}, "gateway.pinned", "valid boolean"),
        ({"priority": 101}, "gateway.priority", "less than or equal to 100"),
        ({"priority": -101}, "gateway.priority", "greater than or equal to -100"),
        ({"prio": 1}, "gateway.prio", "unknown field"),
    ],
)
def test_gateway_section_bad_values(
    tmp_path: Path, section: dict[str, object], field: str, message: str
) -> None:
    got_field, got_message, _ = gateway_section_problem(tmp_path, section)
    assert got_field == field
    assert message in got_message
    assert not got_message.startswith("Value error")


def test_gateway_section_alias_of_128_is_fine(tmp_path: Path) -> None:
    assert parse_gateway_section(tmp_path, {"aliases": ["a" * 128]}).aliases == ["a" * 128]


def test_gateway_section_problem_on_the_command_line(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    path = write_config(home, "alpha", tiny_model, free_port(), gateway={"aliases": ["x y"]})
    out = cli("config", "validate", "alpha")
    assert out.returncode == 1
    assert problem_lines(out) == [
        f"{path}: gateway.aliases[0]: an alias must not contain whitespace ('x y')"
    ]


# --- config schema ------------------------------------------------------------------------


def _check_schema(schema: dict[str, object]) -> None:
    # model is required of a local instance; a remote one (issue 13) has none
    local = schema["oneOf"][0]  # type: ignore[index]
    assert local["required"] == ["model"] and local["not"] == {"required": ["remote"]}
    assert schema["additionalProperties"] is False
    props = schema["properties"]
    assert isinstance(props, dict)
    assert {"$schema", "name", "model", "server", "gpu", "binary", "logs", "gateway"} <= set(props)
    defs = schema["$defs"]
    assert isinstance(defs, dict)
    assert defs["ModelConfig"]["additionalProperties"] is False
    assert defs["ServerConfig"]["properties"]["port"]["minimum"] == 1024
    gateway = defs["InstanceGateway"]
    assert gateway["additionalProperties"] is False
    assert gateway["properties"]["priority"]["maximum"] == 100
    assert all("description" in f for f in gateway["properties"].values())


def test_schema_to_stdout(cli: Cli) -> None:
    out = cli("config", "schema", "--output", "-")
    assert out.returncode == 0, out.stderr
    _check_schema(json.loads(out.stdout))


def test_schema_default_file(cli: Cli, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "llama_orchestrator", "config", "schema"],
        cwd=tmp_path,
        env=cli.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    written = tmp_path / "llama-instance-schema.json"
    assert str(written) in out.stderr
    assert out.stdout == ""
    _check_schema(json.loads(written.read_text()))


# --- model file check (unit) --------------------------------------------------------------


def test_model_file_ok(tiny_model: Path) -> None:
    assert model_file_problem(tiny_model) is None


def test_model_file_problems(tmp_path: Path) -> None:
    assert model_file_problem(tmp_path / "absent.gguf") == "does not exist"
    assert model_file_problem(tmp_path) == "is a directory, not a file"
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    assert model_file_problem(empty) == "is empty"
    short = tmp_path / "short.gguf"
    short.write_bytes(b"GG")
    assert model_file_problem(short) == "is not a GGUF file (starts with b'GG')"
    text = tmp_path / "readme.gguf"
    text.write_text("hello world")
    assert model_file_problem(text) == "is not a GGUF file (starts with b'hell')"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_model_file_fifo_is_refused_without_opening(tmp_path: Path) -> None:
    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)
    assert model_file_problem(fifo) == "is not a regular file"  # opening it would block


@pytest.mark.skipif(os.name == "nt" or os.geteuid() == 0, reason="root reads anything")
def test_model_file_unreadable(tmp_path: Path, tiny_model: Path) -> None:
    locked = tmp_path / "locked.gguf"
    locked.write_bytes(tiny_model.read_bytes())
    locked.chmod(0)
    assert (model_file_problem(locked) or "").startswith("is not readable")


def test_model_file_reads_only_the_header(tmp_path: Path) -> None:
    huge = tmp_path / "huge.gguf"
    with huge.open("wb") as f:
        f.write(b"GGUF\x03\x00\x00\x00")
        f.truncate(64 * 2**30)  # sparse: reading it whole would take minutes and memory
    assert model_file_problem(huge) is None


def test_model_file_of_an_unknown_gguf_version_is_refused(tmp_path: Path, tiny_model: Path) -> None:
    data = tiny_model.read_bytes()
    for version in (0, 1, 4, 99):
        odd = tmp_path / f"v{version}.gguf"
        odd.write_bytes(data[:4] + version.to_bytes(4, "little") + data[8:])
        assert model_file_problem(odd) == (
            f"is GGUF version {version}, which llama-server does not read (it reads 2 and 3)"
        )
    short = tmp_path / "short.gguf"
    short.write_bytes(b"GGUF\x03")
    assert model_file_problem(short) == "is truncated (only 5 bytes)"
    assert model_file_problem(tiny_model) is None
