"""``llama-orch create NAME --model PATH [--port N]`` (issue 2, parts 3 and 10)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli, free_port, write_config

from llama_orchestrator.doctor.ports import find_free_port, port_holder
from llama_orchestrator.home import Home


def run_in(cli: Cli, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llama_orchestrator", *args],
        cwd=cwd,
        env=cli.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def read_config(home: Home, name: str) -> dict[str, Any]:
    data = json.loads(home.config_path(name).read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture
def listener_on() -> Iterator[Any]:
    procs: list[subprocess.Popen[str]] = []

    def start(port: int) -> subprocess.Popen[str]:
        code = (
            "import socket,sys,time;s=socket.socket();"
            "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('127.0.0.1',int(sys.argv[1])));"
            "s.listen();print('ready',flush=True);time.sleep(600)"
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", code, str(port)], stdout=subprocess.PIPE, text=True
        )
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait(timeout=10)


def test_create_writes_a_valid_config(cli: Cli, home: Home, tiny_model: Path) -> None:
    port = free_port()
    out = cli("create", "gemma", "--model", str(tiny_model), "--port", str(port), "--ctx", "512")
    assert out.returncode == 0, out.stderr
    assert str(home.config_path("gemma")) in out.stderr
    cfg = read_config(home, "gemma")
    assert cfg["name"] == "gemma"
    assert cfg["model"]["path"] == str(tiny_model)
    assert cfg["model"]["context_size"] == 512
    assert cfg["model"]["threads"] == min(8, os.cpu_count() or 1)
    assert cfg["server"] == {"host": "127.0.0.1", "port": port}
    check = cli("config", "validate", "gemma")
    assert check.returncode == 0, check.stderr


def test_create_relative_model_is_made_absolute(cli: Cli, home: Home, tiny_model: Path) -> None:
    out = run_in(cli, tiny_model.parent, "create", "tiny", "--model", tiny_model.name)
    assert out.returncode == 0, out.stderr
    stored = read_config(home, "tiny")["model"]["path"]
    assert Path(stored).is_absolute()
    assert Path(stored).samefile(tiny_model)
    assert cli("config", "validate", "tiny").returncode == 0


def test_create_refuses_to_overwrite(
    cli: Cli, home: Home, tiny_model: Path, tmp_path: Path
) -> None:
    path = write_config(home, "gemma", tiny_model, free_port())
    before = path.read_bytes()
    other = tmp_path / "other.gguf"
    other.write_bytes(tiny_model.read_bytes())
    out = cli("create", "gemma", "--model", str(other), "--port", str(free_port()))
    assert out.returncode == 1
    assert "already exists" in out.stderr
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.json"]


def test_create_refuses_to_overwrite_an_invalid_config(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    path = home.config_path("gemma")
    path.parent.mkdir(parents=True)
    path.write_text("{ half-written")
    out = cli("create", "gemma", "--model", str(tiny_model))
    assert out.returncode == 1
    assert path.read_text() == "{ half-written"


def test_create_picks_a_port_no_instance_uses(
    cli: Cli, home: Home, tiny_model: Path, listener_on: Any
) -> None:
    # The first free port from 8001 belongs to a stopped instance; the next one is held
    # by a foreign process. create must pass over both.
    first = find_free_port("127.0.0.1", 8001)
    write_config(home, "beta", tiny_model, first)
    held = find_free_port("127.0.0.1", first + 1)
    listener_on(held)
    out = cli("create", "gemma", "--model", str(tiny_model))
    assert out.returncode == 0, out.stderr
    port = read_config(home, "gemma")["server"]["port"]
    assert port not in (first, held)
    assert port > first
    assert port_holder("127.0.0.1", port) is None
    assert f"(port {port})" in out.stderr
    assert cli("config", "validate", "--all").returncode == 0


def test_create_avoids_ports_of_invalid_configs(cli: Cli, home: Home, tiny_model: Path) -> None:
    first = find_free_port("127.0.0.1", 8001)
    write_config(home, "broken", tiny_model, first, typo=True)  # invalid, but claims a port
    out = cli("create", "gemma", "--model", str(tiny_model))
    assert out.returncode == 0, out.stderr
    assert read_config(home, "gemma")["server"]["port"] != first


def test_create_refuses_a_port_of_another_instance(cli: Cli, home: Home, tiny_model: Path) -> None:
    port = free_port()
    write_config(home, "beta", tiny_model, port)
    out = cli("create", "gemma", "--model", str(tiny_model), "--port", str(port))
    assert out.returncode == 1
    assert "already used by instance 'beta'" in out.stderr
    assert not home.instance_dir("gemma").exists()


def test_create_warns_about_a_foreign_listener(
    cli: Cli, home: Home, tiny_model: Path, listener_on: Any
) -> None:
    port = free_port()
    proc = listener_on(port)
    out = cli("create", "gemma", "--model", str(tiny_model), "--port", str(port))
    assert out.returncode == 0, out.stderr
    assert f"held right now by PID {proc.pid}" in out.stderr
    assert read_config(home, "gemma")["server"]["port"] == port


@pytest.mark.parametrize(
    ("content", "reason"),
    [(None, "does not exist"), (b"<html>oops</html>", "is not a GGUF file"), (b"", "is empty")],
)
def test_create_refuses_a_bad_model(
    cli: Cli, home: Home, tmp_path: Path, content: bytes | None, reason: str
) -> None:
    model = tmp_path / "model.gguf"
    if content is not None:
        model.write_bytes(content)
    out = cli("create", "gemma", "--model", str(model), "--port", str(free_port()))
    assert out.returncode == 1
    assert f"model {model} {reason}" in out.stderr
    assert not home.instance_dir("gemma").exists()


@pytest.mark.parametrize("bad", ["Gemma", "a/b", "..", "../escape", "gemma-"])
def test_create_refuses_bad_names(cli: Cli, home: Home, tiny_model: Path, bad: str) -> None:
    out = cli("create", bad, "--model", str(tiny_model), "--port", str(free_port()))
    assert out.returncode == 2
    assert "invalid instance name" in out.stderr
    assert not home.instances_dir.exists() or list(home.instances_dir.iterdir()) == []
    assert not (home.root / "escape").exists()


@pytest.mark.parametrize(
    ("option", "field"), [("--ctx", "model.context_size"), ("--threads", "model.threads")]
)
def test_create_refuses_out_of_range_options(
    cli: Cli, home: Home, tiny_model: Path, option: str, field: str
) -> None:
    out = cli("create", "gemma", "--model", str(tiny_model), "--port", "9001", option, "999999999")
    assert out.returncode == 2
    assert f"{option} 999999999 is out of range" in out.stderr and f"({field})" in out.stderr
    assert not home.instance_dir("gemma").exists()


def test_create_refuses_a_privileged_port(cli: Cli, home: Home, tiny_model: Path) -> None:
    out = cli("create", "gemma", "--model", str(tiny_model), "--port", "80")
    assert out.returncode == 2
    assert "server.port" in out.stderr
    assert not home.instance_dir("gemma").exists()


@pytest.mark.parametrize(
    ("option", "value", "range_"),
    [
        ("--ctx", "0", "16 to 1048576"),
        ("--threads", "0", "1 to 128"),
        ("--ctx", "-1", "16 to 1048576"),
        ("--threads", "999", "1 to 128"),
        ("--port", "0", "1024 to 65535"),
    ],
)
def test_create_zero_ctx_or_threads_is_a_usage_error(
    cli: Cli, home: Home, tiny_model: Path, option: str, value: str, range_: str
) -> None:
    out = cli("create", "gemma", "--model", str(tiny_model), option, value)
    assert out.returncode == 2, out.stderr
    assert option in out.stderr and range_ in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not home.instance_dir("gemma").exists()
