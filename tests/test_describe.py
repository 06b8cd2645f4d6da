"""``describe`` of a running server shows what runs, not what this CLI would build."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from conftest import Cli, free_port, write_config
from helpers import fake_binary

from llama_orchestrator.home import Home
from llama_orchestrator.state.db import StateStore
from llama_orchestrator.views.describe import describe_data
from llama_orchestrator.views.describe_text import render_describe

SLEEP = "import time; time.sleep(60)"


@pytest.fixture
def server_like(tmp_path: Path, tiny_model: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A sleeping process with a server's flags and the environment a CUDA start gives it."""
    argv = [sys.executable, "-c", SLEEP, "-m", str(tiny_model), "--port", "1", "-dev", "CUDA0"]
    env = {"PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": "0", "MY_FLAG": "a b"}
    p = subprocess.Popen(argv, env=env, start_new_session=True)
    deadline = time.monotonic() + 10  # until it has exec'd, /proc shows our command line
    while psutil.Process(p.pid).cmdline() != argv and time.monotonic() < deadline:
        time.sleep(0.005)
    yield p
    if p.poll() is None:
        p.kill()
    p.wait(10)


def _record(home: Home, name: str, **fields: object) -> None:
    store = StateStore(home.db_path)
    try:
        store.update(name, **fields)
    finally:
        store.close()


@pytest.mark.skipif(sys.platform != "linux", reason="reads another process's environment")
def test_describe_of_a_running_server_ignores_the_cli_llama_server_and_cuda_visible_devices(
    home: Home,
    tiny_model: Path,
    tmp_path: Path,
    server_like: subprocess.Popen[bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bug: describe rebuilt argv and env in the CLI's environment, so with another
    LLAMA_SERVER or CUDA_VISIBLE_DEVICES there it showed a command that never ran."""
    write_config(
        home,
        "alpha",
        tiny_model,
        free_port(),
        gpu={"backend": "cuda", "device_id": 0},
        env={"MY_FLAG": "a b"},
    )
    proc = psutil.Process(server_like.pid)
    recorded = proc.cmdline()
    _record(
        home,
        "alpha",
        status="running",
        desired="running",
        pid=proc.pid,
        pid_create_time=proc.create_time(),
        cmdline=recorded,
        binary="/opt/llama.cpp/llama-server",
        binary_version="version: 1234 (abcdef)",
        start_time=time.time(),
    )
    other = fake_binary(tmp_path)
    monkeypatch.setenv("LLAMA_SERVER", str(other))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")

    data = describe_data(home, "alpha")
    assert data["command"] == recorded and data["command_source"] == "recorded"
    assert data["command_line"] == shlex.join(recorded)
    assert data["binary"] == {
        "path": "/opt/llama.cpp/llama-server",
        "source": "recorded",
        "version": "version: 1234 (abcdef)",
    }
    # read from the server itself, not CUDA_VISIBLE_DEVICES=3 as built here
    assert data["env_overrides"] == {"CUDA_VISIBLE_DEVICES": "0", "MY_FLAG": "a b"}
    assert data["env_source"] == "process"
    assert data["env_generated"] == {"CUDA_VISIBLE_DEVICES": "0"}
    text = render_describe(data)
    assert f"Command:        {shlex.join(recorded)}" in text.splitlines()
    assert "(would run)" not in text and str(other) not in text

    # stopped: the command a start would run, built here and labelled so
    server_like.kill()
    server_like.wait(10)
    _record(home, "alpha", status="stopped", desired="stopped", pid=None)
    data = describe_data(home, "alpha")
    assert data["command_source"] == "would_run" and data["command"][0] == str(other)
    assert data["env_overrides"]["CUDA_VISIBLE_DEVICES"] == "3"  # device 0 of "3,5"
    text = render_describe(data)
    assert any(line.startswith("Command (would run): ") for line in text.splitlines())
    assert "Environment (would run): CUDA_VISIBLE_DEVICES=3 (generated)" in text


def test_describe_cli_shows_the_recorded_command_of_a_running_server(
    cli: Cli, home: Home, tiny_model: Path, tmp_path: Path
) -> None:
    """The same bug end to end: a daemon-started server, described from a CLI whose
    LLAMA_SERVER and CUDA_VISIBLE_DEVICES differ from the daemon's."""
    write_config(home, "alpha", tiny_model, free_port())
    assert cli("up", "alpha").returncode == 0
    store = StateStore(home.db_path)
    try:
        row = store.get("alpha")
    finally:
        store.close()
    assert row is not None and row.cmdline
    other = {"LLAMA_SERVER": str(fake_binary(tmp_path)), "CUDA_VISIBLE_DEVICES": "3"}
    out = cli("describe", "alpha", "--json", env=other)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["command"] == list(row.cmdline)
    assert data["binary"]["path"] == row.binary
    text = cli("describe", "alpha", env=other).stdout
    assert f"Command:        {shlex.join(row.cmdline)}" in text.splitlines()


def test_describe_of_a_running_instance_with_an_invalid_config_shows_its_runtime(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    """The bug: describe showed only the config error, hiding the server that still runs."""
    cfg = write_config(home, "alpha", tiny_model, free_port())
    assert cli("up", "alpha").returncode == 0
    pid = json.loads(cli("ps", "--json").stdout)[0]["pid"]
    cfg.write_text('{"name": "alpha", "model": {"path": 3}}')
    out = cli("describe", "alpha", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["runtime"]["pid"] == pid and data["runtime"]["status"] == "running"
    assert "model.path" in data["config_error"] and data["config"] is None
    assert data["command_source"] == "recorded" and data["events"]
    assert "invalid" in out.stderr
    text = cli("describe", "alpha").stdout
    assert f"  pid:            {pid}" in text.splitlines()
    assert "Config error:" in text and "model.path" in text and "Events:" in text
    assert "Command:" in text

    # a record whose config folder is gone is described from the record alone (removed
    # while no daemon watches: a running daemon stops its server, issue 11)
    import shutil

    assert cli("daemon", "stop").returncode == 0
    shutil.rmtree(home.instance_dir("alpha"))
    data = json.loads(cli("describe", "alpha", "--json").stdout)
    assert data["runtime"]["pid"] == pid and data["config_removed"] is True
    # a never-started instance with an invalid config still fails with the error
    bad = write_config(home, "beta", tiny_model, free_port())
    bad.write_text('{"name": "beta"}')
    out = cli("describe", "beta")
    assert out.returncode == 1 and "model" in out.stderr


def test_secret_flag_values_are_never_shown(cli: Cli, home: Home, tiny_model: Path) -> None:
    """An instance's --api-key (and --hf-token, and secret-looking env values) reach its
    server but are shown as *** in the spawned event, describe and its JSON."""
    from helpers import events

    write_config(
        home,
        "alpha",
        tiny_model,
        free_port(),
        args=["--api-key", "s3cret-key-1", "--hf-token=hf_s3cret"],
        env={"HF_TOKEN": "hf_s3cret2", "OMP_NUM_THREADS": "1"},
    )
    human = cli("describe", "alpha").stdout  # before a start: what would run
    assert "s3cret" not in human and "--api-key '***' '--hf-token=***'" in human, human
    assert "HF_TOKEN='***' OMP_NUM_THREADS=1" in human, human
    described = json.loads(cli("describe", "alpha", "--json").stdout)
    assert described["command"][-3:] == ["--api-key", "***", "--hf-token=***"]
    assert described["config"]["args"] == ["--api-key", "***", "--hf-token=***"]
    assert "s3cret" not in json.dumps(described)

    # the same list as the export: an MCP definition's flag and variable, a URL's password
    write_config(
        home,
        "gamma",
        tiny_model,
        free_port(),
        args=["--mcp-servers-json", '{"x": "s3cret"}', "-mu", "https://u:s3cret@hf.example/m"],
        env={"LLAMA_ARG_MCP_SERVERS_JSON": "s3cret", "HTTPS_PROXY": "http://u:s3cret@proxy:3128"},
    )
    gamma = cli("describe", "gamma", "--json").stdout
    assert "s3cret" not in gamma and "https://***@hf.example/m" in gamma, gamma

    write_config(home, "beta", tiny_model, free_port(), args=["--api-key", "s3cret-key-2"])
    assert cli("up", "beta").returncode == 0  # the server has its key
    spawned = [e for e in events(home, "beta") if e["kind"] == "spawned"]
    assert spawned and spawned[-1]["reason"].endswith("--api-key ***"), spawned
    for text in (cli("describe", "beta").stdout, cli("describe", "beta", "--json").stdout):
        assert "s3cret" not in text and "***" in text
