"""``<home>/gateway.json``: its model and loader, and how validate, lint and schema see it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli, free_port, write_config

from llama_orchestrator.config.gateway import (
    GatewayConfig,
    LoadedGateway,
    device_key,
    is_loopback,
    load_gateway,
)
from llama_orchestrator.config.loader import ConfigError, Problem
from llama_orchestrator.doctor.lint import GATEWAY_LABEL, Linter, Target, validate
from llama_orchestrator.doctor.ports import PortHolder
from llama_orchestrator.home import Home


def write_gateway(home: Home, **fields: Any) -> Path:
    home.root.mkdir(parents=True, exist_ok=True)
    home.gateway_path.write_text(json.dumps(fields, indent=2))
    return home.gateway_path


def problems_of(home: Home) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        load_gateway(home)
    return info.value.problems


def only_problem(home: Home) -> Problem:
    problems = problems_of(home)
    assert len(problems) == 1, problems
    return problems[0]


# --- the model and loader -----------------------------------------------------------------


def test_missing_file_gives_the_defaults(home: Home) -> None:
    loaded = load_gateway(home)
    assert isinstance(loaded, LoadedGateway)
    assert loaded.exists is False
    assert loaded.path == home.root / "gateway.json" == home.gateway_path
    c = loaded.config
    assert (c.host, c.port, c.enabled) == ("127.0.0.1", 8080, True)
    assert (c.api_keys, c.api_keys_file, loaded.api_keys, loaded.requires_key) == (
        [],
        None,
        (),
        False,
    )
    assert (c.load_timeout, c.max_body_mb, c.max_running) == (120, 32, None)
    assert (c.queue.max_per_model, c.queue.timeout) == (64, 300)
    assert (c.memory_budget_mb, c.default_ttl, c.metrics_public) == ({}, 0, False)


def test_empty_object_is_the_defaults_too(home: Home) -> None:
    write_gateway(home)
    loaded = load_gateway(home)
    assert loaded.exists is True
    assert loaded.config == GatewayConfig()
    assert loaded.raw_hash


def test_every_field_read(home: Home) -> None:
    write_gateway(
        home,
        **{
            "$schema": "./llama-gateway-schema.json",
            "host": "::1",
            "port": 9000,
            "enabled": False,
            "api_keys": ["sk-local-1234"],
            "load_timeout": 15,
            "queue": {"max_per_model": 0, "timeout": 2.5},
            "max_body_mb": 1,
            "max_running": 2,
            "memory_budget_mb": {"cpu": 16000, "cuda:0": 24000, "vulkan:1": 8000, "metal:0": 1},
            "default_ttl": 600,
            "metrics_public": True,
        },
    )
    loaded = load_gateway(home)
    c = loaded.config
    assert (c.host, c.port, c.enabled, c.load_timeout) == ("::1", 9000, False, 15)
    assert (c.queue.max_per_model, c.queue.timeout, c.max_body_mb, c.max_running) == (0, 2.5, 1, 2)
    assert c.memory_budget_mb == {"cpu": 16000, "cuda:0": 24000, "vulkan:1": 8000, "metal:0": 1}
    assert (c.default_ttl, c.metrics_public) == (600, True)
    assert loaded.api_keys == ("sk-local-1234",)


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"port": 0}, "port", "greater than or equal to 1"),
        ({"port": 65536}, "port", "less than or equal to 65535"),
        ({"port": "8080"}, "port", "valid integer"),
        ({"host": ""}, "host", "at least 1 character"),
        ({"host": " 127.0.0.1"}, "host", "must not contain whitespace"),
        ({"enabled": "yes"}, "enabled", "valid boolean"),
        ({"load_timeout": 5}, "load_timeout", "greater than or equal to 15"),
        ({"queue": {"max_per_model": -1}}, "queue.max_per_model", "greater than or equal to 0"),
        ({"queue": {"timeout": 0}}, "queue.timeout", "greater than 0"),
        ({"queue": {"size": 3}}, "queue.size", "unknown field"),
        ({"max_body_mb": 0}, "max_body_mb", "greater than or equal to 1"),
        ({"max_running": 0}, "max_running", "greater than or equal to 1"),
        ({"default_ttl": -1}, "default_ttl", "greater than or equal to 0"),
        ({"metrics_public": 1}, "metrics_public", "valid boolean"),
        (
            {"memory_budget_mb": {"cuda:0": 0}},
            "memory_budget_mb.cuda:0",
            "greater than or equal to 1",
        ),
        ({"memory_budget_mb": {"cuda:0": "8G"}}, "memory_budget_mb.cuda:0", "valid integer"),
        ({"api_keys_file": ""}, "api_keys_file", "at least 1 character"),
        ({"prot": 8080}, "prot", "unknown field"),
    ],
)
def test_each_bad_value_is_a_named_problem(
    home: Home, fields: dict[str, Any], field: str, message: str
) -> None:
    path = write_gateway(home, **fields)
    problem = only_problem(home)
    assert problem.file == str(path)
    assert problem.field == field
    assert message in problem.message
    assert "Value error" not in problem.message


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("CUDA0", "write it as 'cuda:0'"),
        ("vulkan1", "write it as 'vulkan:1'"),
        ("Vulkan:1", "write it as 'vulkan:1'"),
        ("CPU", "write it as 'cpu'"),
        ("cuda:64", ""),
        ("rocm:0", ""),
        ("gpu", ""),
        ("cpu:0", ""),
    ],
)
def test_memory_budget_device_keys_are_checked(home: Home, key: str, hint: str) -> None:
    write_gateway(home, memory_budget_mb={"cuda:1": 500, key: 1000})
    problem = only_problem(home)
    assert (problem.field, problem.value) == (f"memory_budget_mb.{key}", repr(key))
    assert problem.message.startswith("not a device key: ")
    assert (hint or "e.g. 'cuda:0'") in problem.message


def test_memory_budget_every_device_index_up_to_63(home: Home) -> None:
    budget = {f"{b}:{i}": 1 for b in ("cuda", "vulkan", "metal") for i in range(64)}
    write_gateway(home, memory_budget_mb={"cpu": 1, **budget})
    assert len(load_gateway(home).config.memory_budget_mb) == 1 + 3 * 64
    for bad in ("cuda:01", "cuda:-1", " cpu", "cuda:0 "):
        write_gateway(home, memory_budget_mb={bad: 1})
        assert only_problem(home).field == f"memory_budget_mb.{bad}"


def test_device_key_of_an_instance() -> None:
    assert device_key("cpu", 3) == "cpu"
    assert device_key("cuda", 1) == "cuda:1"
    assert device_key("vulkan", 0) == "vulkan:0"


def test_invalid_json_names_line_and_column(home: Home) -> None:
    home.root.mkdir(parents=True)
    home.gateway_path.write_text('{\n  "port": 8080,\n}\n')
    problem = only_problem(home)
    assert problem.field == "(json)"
    assert "invalid JSON at line 3, column 1" in problem.message
    home.gateway_path.write_text("[]")
    assert only_problem(home).message == "must be a JSON object"


def test_short_api_key_is_refused_without_showing_it(home: Home) -> None:
    write_gateway(home, api_keys=["long-enough-key", "Zq7xK"])
    problem = only_problem(home)
    assert problem.field == "api_keys[1]"
    assert problem.message == "an API key must be at least 8 characters"
    assert problem.value == "<hidden, 5 characters>"
    assert "Zq7xK" not in str(problem)


def test_api_key_with_whitespace_is_refused(home: Home) -> None:
    write_gateway(home, api_keys=["two words here"])
    assert only_problem(home).message == "an API key must not contain whitespace"


def test_api_keys_file_is_parsed_and_merged(home: Home) -> None:
    home.root.mkdir(parents=True)
    (home.root / "keys.txt").write_text(
        "# one key per line\n\n  sk-from-file-1  \nsk-inline-12345\n   # indented comment\n"
        "sk-from-file-1\n"
    )
    write_gateway(home, api_keys=["sk-inline-12345"], api_keys_file="keys.txt")
    loaded = load_gateway(home)
    assert loaded.api_keys == ("sk-inline-12345", "sk-from-file-1")  # each once, in order
    assert loaded.keys_file == home.root / "keys.txt"
    assert loaded.requires_key


def test_api_keys_file_absolute_path(home: Home, tmp_path: Path) -> None:
    keys = tmp_path / "elsewhere" / "keys"
    keys.parent.mkdir()
    keys.write_text("sk-absolute-key\n")
    write_gateway(home, api_keys_file=str(keys))
    assert load_gateway(home).api_keys == ("sk-absolute-key",)


def test_missing_api_keys_file_is_a_problem(home: Home) -> None:
    path = write_gateway(home, api_keys_file="secrets/keys.txt")
    problem = only_problem(home)
    assert (problem.file, problem.field) == (str(path), "api_keys_file")
    assert "key file does not exist" in problem.message
    assert problem.value == str(home.root / "secrets" / "keys.txt")


def test_unreadable_api_keys_file_is_a_problem(home: Home) -> None:
    write_gateway(home, api_keys_file="keys")
    (home.root / "keys").mkdir()  # a folder cannot be read as a file
    problem = only_problem(home)
    assert problem.field == "api_keys_file"
    assert "cannot read the key file" in problem.message


def test_bad_key_in_the_file_names_its_line(home: Home) -> None:
    home.root.mkdir(parents=True)
    keys = home.root / "keys.txt"
    keys.write_text("sk-good-key-1\n# comment\nQw3rT\n")
    write_gateway(home, api_keys_file="keys.txt")
    problem = only_problem(home)
    assert (problem.file, problem.field) == (str(keys), "line 3")
    assert problem.message == "an API key must be at least 8 characters"
    assert "Qw3rT" not in str(problem)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "my-box.lan"])
def test_non_loopback_without_keys_is_refused(home: Home, host: str) -> None:
    path = write_gateway(home, host=host)
    problem = only_problem(home)
    assert (problem.file, problem.field, problem.value) == (str(path), "host", repr(host))
    assert "add api_keys" in problem.message


def test_non_loopback_with_keys_is_fine(home: Home) -> None:
    write_gateway(home, host="0.0.0.0", api_keys=["sk-abcdefgh"])
    assert load_gateway(home).config.host == "0.0.0.0"
    home.root.joinpath("keys").write_text("sk-from-file-2\n")
    write_gateway(home, host="0.0.0.0", api_keys_file="keys")
    assert load_gateway(home).api_keys == ("sk-from-file-2",)


def test_non_loopback_with_an_empty_key_file_is_refused(home: Home) -> None:
    home.root.mkdir(parents=True)
    home.root.joinpath("keys").write_text("# no keys yet\n")
    write_gateway(home, host="0.0.0.0", api_keys_file="keys")
    assert only_problem(home).field == "host"


def test_disabled_gateway_on_any_host_needs_no_key(home: Home) -> None:
    write_gateway(home, host="0.0.0.0", enabled=False)
    assert load_gateway(home).config.enabled is False


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("example.org", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_every_problem_is_reported_at_once(home: Home) -> None:
    write_gateway(home, port=0, load_timeout=1, queue={"timeout": -1})
    assert [p.field for p in problems_of(home)] == ["port", "load_timeout", "queue.timeout"]


# --- validate -----------------------------------------------------------------------------


def test_validate_reports_gateway_problems_only_when_asked(home: Home, tiny_model: Path) -> None:
    write_config(home, "alpha", tiny_model, free_port())
    path = write_gateway(home, port=70000)
    target = [Target.of_instance(home, "alpha")]
    assert validate(home, target) == []
    problems = validate(home, target, gateway=True)
    assert [(p.file, p.field) for p in problems] == [(str(path), "port")]


def test_validate_instance_on_the_gateway_port(home: Home, tiny_model: Path) -> None:
    cfg = write_config(home, "alpha", tiny_model, 9123)
    write_gateway(home, port=9123)
    problems = validate(home, [Target.of_instance(home, "alpha")])
    assert len(problems) == 1
    assert (problems[0].file, problems[0].field, problems[0].value) == (
        str(cfg),
        "server.port",
        "9123",
    )
    assert "port 9123 is the gateway's port" in problems[0].message
    write_gateway(home, port=9123, enabled=False)
    assert validate(home, [Target.of_instance(home, "alpha")]) == []


def test_validate_instance_on_the_default_gateway_port(home: Home, tiny_model: Path) -> None:
    write_config(home, "alpha", tiny_model, 8080)
    problems = validate(home, [Target.of_instance(home, "alpha")])
    assert ["the gateway's port (its default)" in p.message for p in problems] == [True]


def test_cli_validate_all_includes_gateway(cli: Cli, home: Home, tiny_model: Path) -> None:
    write_config(home, "alpha", tiny_model, free_port())
    path = write_gateway(home, host="0.0.0.0")
    out = cli("config", "validate", "--all")
    assert out.returncode == 1
    assert f"{path}: host: a gateway listening beyond loopback" in out.stderr
    assert "1 problem(s) in 1 of 2 config(s)" in out.stderr
    assert "Traceback" not in out.stderr
    write_gateway(home, port=free_port())
    out = cli("config", "validate", "--all")
    assert out.returncode == 0, out.stderr
    assert "2 config(s) valid" in out.stderr


def test_cli_validate_gateway_without_instances(cli: Cli, home: Home) -> None:
    write_gateway(home, queue={"max_per_model": "lots"})
    out = cli("config", "validate", "--all")
    assert out.returncode == 1
    assert f"{home.gateway_path}: queue.max_per_model: Input should be a valid integer" in (
        out.stderr
    )


# --- lint ---------------------------------------------------------------------------------


def gateway_rows(home: Home, **kwargs: Any) -> dict[str, tuple[str, str]]:
    rows = Linter(home, holder=kwargs.pop("holder", lambda h, p: None), **kwargs).lint(
        [], gateway=True
    )
    assert all(r.instance == GATEWAY_LABEL and r.file == str(home.gateway_path) for r in rows)
    return {r.check: (r.level, r.message) for r in rows}


def test_lint_clean_gateway(home: Home) -> None:
    write_gateway(home, port=9200)
    rows = gateway_rows(home)
    assert list(rows) == ["json", "schema", "api-keys", "port-unique", "port-free"]
    assert {level for level, _ in rows.values()} == {"ok"}
    assert rows["port-free"][1] == "127.0.0.1:9200 is free"


def test_lint_without_gateway_file_has_no_gateway_rows(home: Home) -> None:
    home.root.mkdir(parents=True)
    assert Linter(home, holder=lambda h, p: None).lint([], gateway=True) == []


def test_lint_gateway_bad_json_and_schema(home: Home) -> None:
    home.root.mkdir(parents=True)
    home.gateway_path.write_text('{"port": }')
    rows = gateway_rows(home)
    assert list(rows) == ["json"]
    assert rows["json"][0] == "error" and "line 1, column" in rows["json"][1]
    write_gateway(home, port=-1, extra=True)
    results = Linter(home, holder=lambda h, p: None).lint([], gateway=True)
    assert [(r.check, r.level) for r in results] == [
        ("json", "ok"),
        ("schema", "error"),
        ("schema", "error"),
    ]
    assert results[1].message == "port: Input should be greater than or equal to 1 (-1)"
    assert results[2].message == "extra: unknown field (check its spelling)"


def test_lint_gateway_keys(home: Home) -> None:
    write_gateway(home, host="0.0.0.0", port=9201)
    level, message = gateway_rows(home)["api-keys"]
    assert level == "error" and "add api_keys" in message
    write_gateway(home, host="0.0.0.0", port=9201, api_keys_file="nope.txt")
    level, message = gateway_rows(home)["api-keys"]
    assert level == "error" and "api_keys_file: the key file does not exist" in message
    home.root.joinpath("keys.txt").write_text("sk-from-file-3\n")
    write_gateway(
        home, host="0.0.0.0", port=9201, api_keys=["sk-inline-1"], api_keys_file="keys.txt"
    )
    assert gateway_rows(home)["api-keys"] == (
        "ok",
        f"2 API key(s) (1 from {home.root / 'keys.txt'})",
    )


def test_lint_gateway_port_used_by_an_instance(home: Home, tiny_model: Path) -> None:
    write_config(home, "alpha", tiny_model, 9300)
    write_config(home, "beta", tiny_model, 9301)
    write_gateway(home, port=9300)
    level, message = gateway_rows(home)["port-unique"]
    assert level == "error"
    assert message == "port 9300 is also used by instance 'alpha' (127.0.0.1:9300)"
    rows = Linter(home, holder=lambda h, p: None).lint(
        [Target.of_instance(home, "alpha"), Target.of_instance(home, "beta")], gateway=True
    )
    unique = {(r.instance, r.level) for r in rows if r.check == "port-unique"}
    assert unique == {("alpha", "error"), ("beta", "ok"), (GATEWAY_LABEL, "error")}
    alpha = next(r for r in rows if r.instance == "alpha" and r.check == "port-unique")
    assert "port 9300 is the gateway's port (set in gateway.json)" in alpha.message


def test_lint_gateway_port_held(home: Home) -> None:
    write_gateway(home, port=9400)

    def held(host: str, port: int) -> PortHolder:
        assert (host, port) == ("127.0.0.1", 9400)
        return PortHolder(777, "python -m http.server 9400")

    level, message = gateway_rows(home, holder=held)["port-free"]
    assert level == "warning"
    assert message == "127.0.0.1:9400 is held by PID 777 (python -m http.server 9400)"
    level, message = gateway_rows(home, holder=held, daemon_pid=777)["port-free"]
    assert level == "ok"
    assert "held by this home's daemon (PID 777)" in message


def test_lint_disabled_gateway_skips_port_checks(home: Home, tiny_model: Path) -> None:
    write_config(home, "alpha", tiny_model, 9500)
    write_gateway(home, port=9500, enabled=False)

    def held(host: str, port: int) -> PortHolder:
        raise AssertionError("a disabled gateway's port is not probed")

    rows = gateway_rows(home, holder=held)
    assert rows["port-unique"][0] == rows["port-free"][0] == "ok"


def test_cli_lint_includes_gateway_rows(cli: Cli, home: Home, tiny_model: Path) -> None:
    write_config(home, "alpha", tiny_model, free_port())
    port = free_port()
    write_gateway(home, port=port)
    out = cli("config", "lint", "--format", "json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    gateway = [r for r in rows if r["instance"] == GATEWAY_LABEL]
    assert [r["check"] for r in gateway] == [
        "json",
        "schema",
        "api-keys",
        "port-unique",
        "port-free",
    ]
    assert "2 config(s): 0 error(s)" in out.stderr
    # a --file check alone leaves the home's gateway alone
    out = cli("config", "lint", "--format", "json", "--file", str(home.config_path("alpha")))
    assert all(r["instance"] != GATEWAY_LABEL for r in json.loads(out.stdout))
    table = cli("config", "lint")
    assert table.returncode == 0
    assert GATEWAY_LABEL in table.stdout


def test_cli_create_skips_the_gateway_port(cli: Cli, home: Home, tiny_model: Path) -> None:
    write_gateway(home, port=free_port())
    port = json.loads(home.gateway_path.read_text())["port"]
    out = cli("create", "alpha", "--model", str(tiny_model), "--port", str(port))
    assert out.returncode == 1
    assert f"port {port} is the gateway's port" in out.stderr
    assert not home.config_path("alpha").exists()


# --- schema -------------------------------------------------------------------------------


def _check_gateway_schema(schema: dict[str, Any]) -> None:
    assert schema["title"] == "llama-orchestrator gateway"
    assert schema["additionalProperties"] is False
    props = schema["properties"]
    assert {"$schema", "host", "port", "api_keys", "api_keys_file", "queue"} <= set(props)
    assert props["port"]["default"] == 8080
    assert props["load_timeout"]["minimum"] == 15
    assert "description" in props["memory_budget_mb"]
    assert "cuda" in props["memory_budget_mb"]["propertyNames"]["pattern"]
    assert schema["$defs"]["QueueConfig"]["additionalProperties"] is False


def test_schema_writes_both_files(cli: Cli, tmp_path: Path) -> None:
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
    instance, gateway = (
        tmp_path / "llama-instance-schema.json",
        tmp_path / "llama-gateway-schema.json",
    )
    assert f"wrote {instance}" in out.stderr and f"wrote {gateway}" in out.stderr
    _check_gateway_schema(json.loads(gateway.read_text()))
    assert json.loads(instance.read_text())["title"] == "llama-orchestrator instance"


def test_schema_output_puts_the_gateway_schema_beside(cli: Cli, tmp_path: Path) -> None:
    target = tmp_path / "schemas" / "instance.json"
    out = cli("config", "schema", "-o", str(target))
    assert out.returncode == 0, out.stderr
    assert target.is_file()
    _check_gateway_schema(json.loads((target.parent / "llama-gateway-schema.json").read_text()))


def test_schema_gateway_to_stdout(cli: Cli) -> None:
    out = cli("config", "schema", "--gateway", "-o", "-")
    assert out.returncode == 0, out.stderr
    _check_gateway_schema(json.loads(out.stdout))
