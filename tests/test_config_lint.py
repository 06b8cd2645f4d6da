"""``llama-orch config lint`` (issue 2, parts 4 and 10) and the port probe under it."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli, free_port, write_config

from llama_orchestrator.config.loader import load_file
from llama_orchestrator.doctor.gpucheck import parse_devices
from llama_orchestrator.doctor.lint import Linter, Target
from llama_orchestrator.doctor.ports import PortHolder, find_free_port, port_holder
from llama_orchestrator.engine.command import log_paths
from llama_orchestrator.home import Home

LISTENER = (
    "import socket,sys,time;s=socket.socket();"
    "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('127.0.0.1',int(sys.argv[1])));"
    "s.listen();print('ready',flush=True);time.sleep(600)"
)


@pytest.fixture
def foreign_listener() -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A process that is not ours, listening on a port (like a stray http.server)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", LISTENER, str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield proc, port
    finally:
        proc.kill()
        proc.wait(timeout=10)


def lint_json(cli: Cli, *args: str, code: int = 0) -> list[dict[str, Any]]:
    out = cli("config", "lint", "--format", "json", *args)
    assert out.returncode == code, out.stderr
    rows = json.loads(out.stdout)
    assert isinstance(rows, list)
    return rows


def row(rows: list[dict[str, Any]], instance: str, check: str) -> dict[str, Any]:
    found = [r for r in rows if r["instance"] == instance and r["check"] == check]
    assert len(found) == 1, (instance, check, rows)
    return found[0]


def fake_server(tmp_path: Path, body: str) -> Path:
    """A stand-in llama-server that only knows --list-devices."""
    script = tmp_path / "fake-llama-server"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return script


VULKAN_LISTING = (
    'echo "load_backend: loaded Vulkan backend" >&2\n'
    'echo "Available devices:"\n'
    'echo "  Vulkan0: AMD Radeon RX 7900 XTX (24560 MiB, 24000 MiB free)"'
)


# --- end to end ---------------------------------------------------------------------------


def test_lint_clean_config_reports_every_check(cli: Cli, home: Home, tiny_model: Path) -> None:
    write_config(home, "alpha", tiny_model, free_port())
    rows = lint_json(cli)
    checks = [r["check"] for r in rows]
    assert checks == [
        "json",
        "schema",
        "model",
        "binary",
        "args",
        "secrets",
        "port-unique",
        "aliases",
        "port-free",
        "gpu-device",
        "gpu-memory",
        "logs-writable",
        "kv-cache",
    ]
    assert {r["level"] for r in rows} == {"ok"}
    assert all(r["file"] == str(home.config_path("alpha")) for r in rows)


def test_lint_port_held_by_foreign_process(
    cli: Cli, home: Home, tiny_model: Path, foreign_listener: tuple[subprocess.Popen[str], int]
) -> None:
    proc, port = foreign_listener
    write_config(home, "alpha", tiny_model, port)
    rows = lint_json(cli, "alpha")  # a warning, not an error: exit 0
    held = row(rows, "alpha", "port-free")
    assert held["level"] == "warning"
    assert f"127.0.0.1:{port} is held by PID {proc.pid} (" in held["message"]
    assert "python" in held["message"]
    table = cli("config", "lint", "alpha")
    assert table.returncode == 0
    assert str(proc.pid) in table.stdout


def test_lint_two_instances_on_one_port(cli: Cli, home: Home, tiny_model: Path) -> None:
    port = free_port()
    write_config(home, "alpha", tiny_model, port)
    write_config(home, "beta", tiny_model, port)
    rows = lint_json(cli, code=1)
    a, b = row(rows, "alpha", "port-unique"), row(rows, "beta", "port-unique")
    assert a["level"] == b["level"] == "error"
    assert "instance 'beta'" in a["message"]
    assert "instance 'alpha'" in b["message"]
    # linting one instance still sees the clash with the other
    only = lint_json(cli, "alpha", code=1)
    assert "instance 'beta'" in row(only, "alpha", "port-unique")["message"]


def test_lint_corrupt_json_and_bad_model(
    cli: Cli, home: Home, tiny_model: Path, tmp_path: Path
) -> None:
    broken = home.config_path("alpha")
    broken.parent.mkdir(parents=True)
    broken.write_text('{"name": "alpha",\n "model": }')
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"\x7fELF not a model")
    write_config(home, "beta", fake, free_port())
    rows = lint_json(cli, code=1)
    assert [r["check"] for r in rows if r["instance"] == "alpha"] == ["json"]
    assert "line 2, column" in row(rows, "alpha", "json")["message"]
    model = row(rows, "beta", "model")
    assert model["level"] == "error"
    assert "is not a GGUF file (starts with b'\\x7fELF')" in model["message"]


def test_lint_unknown_field_and_wrong_type(cli: Cli, home: Home, tiny_model: Path) -> None:
    write_config(home, "alpha", tiny_model, free_port(), gpu={"backend": "rocm"}, threads=4)
    rows = lint_json(cli, "alpha", code=1)
    schema = [r["message"] for r in rows if r["check"] == "schema"]
    assert any(m.startswith("threads: unknown field") for m in schema)
    assert any(m.startswith("gpu.backend: ") and "'rocm'" in m for m in schema)
    assert all(r["level"] == "error" for r in rows if r["check"] == "schema")


def test_lint_unknown_and_bad_names(cli: Cli, home: Home, tiny_model: Path) -> None:
    write_config(home, "alpha", tiny_model, free_port())
    out = cli("config", "lint", "ghost")
    assert out.returncode == 1
    assert "known: alpha" in out.stderr
    for bad in ("UPPER", "../alpha", "a/b"):
        assert cli("config", "lint", bad).returncode == 2


def test_lint_bad_format_is_usage_error(cli: Cli) -> None:
    out = cli("config", "lint", "--format", "yaml")
    assert out.returncode == 2


def test_lint_table(cli: Cli, home: Home, tiny_model: Path) -> None:
    write_config(home, "alpha", tiny_model, free_port())
    out = cli("config", "lint")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[:4] == ["INSTANCE", "CHECK", "LEVEL", "MESSAGE"]
    assert "logs-writable" in out.stdout
    assert "0 error(s)" in out.stderr


def test_lint_log_folder_not_creatable(cli: Cli, home: Home, tiny_model: Path) -> None:
    home.root.mkdir(parents=True)
    (home.root / "blocker").write_text("a file where a folder should be")
    write_config(home, "alpha", tiny_model, free_port(), logs={"stdout": "blocker/{name}/out.log"})
    rows = lint_json(cli, code=1)
    logs = row(rows, "alpha", "logs-writable")
    assert logs["level"] == "error"
    assert logs["message"].endswith(f"{home.root / 'blocker'} is not a folder")


def test_lint_and_engine_agree_on_log_paths_with_tilde(
    home: Home, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """lint expanded ``~`` in log paths while the engine did not: it checked one file and
    the server wrote ``<home>/~/...``. Both now take the engine's one answer."""
    user_home = tmp_path / "user"
    monkeypatch.setenv("HOME", str(user_home))
    monkeypatch.setenv("USERPROFILE", str(user_home))
    logs = {"stdout": "~/llama-logs/{name}.out", "stderr": "~/llama-logs/{name}.err"}
    write_config(home, "alpha", tiny_model, 8100, logs=logs)
    loaded = load_file(home.config_path("alpha"))
    out, err = log_paths(loaded, home.root)
    assert (out, err) == (
        user_home / "llama-logs" / "alpha.out",
        user_home / "llama-logs" / "alpha.err",
    )
    linter = Linter(home, holder=lambda h, p: None)
    assert linter.log_paths(loaded) == [out, err]
    level, message = linter.check_logs(loaded)
    assert level == "ok"
    assert message == f"log folder {user_home / 'llama-logs'} will be created (in {tmp_path})"


@pytest.mark.skipif(os.name == "nt", reason="shell-script stand-in for llama-server")
def test_lint_gpu_device_found_and_missing(
    cli: Cli, home: Home, tiny_model: Path, tmp_path: Path
) -> None:
    server = str(fake_server(tmp_path, VULKAN_LISTING))
    gpu0 = {"backend": "vulkan", "device_id": 0}
    write_config(home, "alpha", tiny_model, free_port(), binary=server, gpu=gpu0)
    gpu1 = {"backend": "vulkan", "device_id": 1}
    write_config(home, "beta", tiny_model, free_port(), binary=server, gpu=gpu1)
    write_config(home, "gamma", tiny_model, free_port(), binary=server, gpu={"backend": "cuda"})
    rows = lint_json(cli, code=1)
    ok = row(rows, "alpha", "gpu-device")
    assert ok["level"] == "ok"
    assert "AMD Radeon RX 7900 XTX" in ok["message"]
    for name, wanted in (("beta", "Vulkan1"), ("gamma", "CUDA0")):
        missing = row(rows, name, "gpu-device")
        assert missing["level"] == "error"
        assert f"device {wanted} not found" in missing["message"]
        assert "Vulkan0 (AMD Radeon RX 7900 XTX" in missing["message"]


@pytest.mark.skipif(os.name == "nt", reason="shell-script stand-in for llama-server")
def test_lint_gpu_undetectable_is_a_warning(
    cli: Cli, home: Home, tiny_model: Path, tmp_path: Path
) -> None:
    server = str(fake_server(tmp_path, 'echo "libvulkan.so.1: cannot open" >&2; exit 127'))
    write_config(home, "alpha", tiny_model, free_port(), binary=server, gpu={"backend": "vulkan"})
    write_config(
        home,
        "beta",
        tiny_model,
        free_port(),
        binary=str(tmp_path / "absent"),
        gpu={"backend": "metal"},
    )
    rows = lint_json(cli, code=1)  # beta's missing binary is an error of its own (issue 10)
    assert row(rows, "beta", "binary")["level"] == "error"
    broken = row(rows, "alpha", "gpu-device")
    assert broken["level"] == "warning"
    assert broken["message"] == "cannot detect devices: exit code 127: libvulkan.so.1: cannot open"
    absent = row(rows, "beta", "gpu-device")
    assert absent["level"] == "warning"
    assert "does not exist" in absent["message"]


# --- units --------------------------------------------------------------------------------


def test_parse_devices() -> None:
    text = (
        "ggml_vulkan: Found 2 Vulkan devices:\n"
        "Available devices:\n"
        "  Vulkan0: AMD Radeon RX 7900 XTX (24560 MiB, 24000 MiB free)\n"
        "  Vulkan1: Intel(R) UHD Graphics (8000 MiB, 7000 MiB free)\n"
        "main: exiting\n"
        "  Vulkan9: after the list, ignored (1 MiB, 1 MiB free)\n"
    )
    assert parse_devices(text) == {
        "Vulkan0": "AMD Radeon RX 7900 XTX (24560 MiB, 24000 MiB free)",
        "Vulkan1": "Intel(R) UHD Graphics (8000 MiB, 7000 MiB free)",
    }
    assert parse_devices("Available devices:\n  (none)\n") == {}
    assert parse_devices("error: unknown argument --list-devices") is None


def test_own_server_on_its_port_is_ok(home: Home, tiny_model: Path) -> None:
    write_config(home, "alpha", tiny_model, 8100)
    write_config(home, "beta", tiny_model, 8101)

    def held(host: str, port: int) -> PortHolder:
        return PortHolder(4242 if port == 8100 else 5151, "llama-server -m x.gguf")

    linter = Linter(home, own_pids={"alpha": 4242, "beta": 4343}, holder=held)
    rows = linter.lint([Target.of_instance(home, "alpha"), Target.of_instance(home, "beta")])
    alpha = next(r for r in rows if r.instance == "alpha" and r.check == "port-free")
    beta = next(r for r in rows if r.instance == "beta" and r.check == "port-free")
    assert (alpha.level, beta.level) == ("ok", "warning")
    assert "own server (PID 4242)" in alpha.message
    assert beta.message == "127.0.0.1:8101 is held by PID 5151 (llama-server -m x.gguf)"


def test_device_list_runs_once_per_binary(home: Home, tiny_model: Path) -> None:
    calls: list[list[str]] = []

    def run(argv: list[str]) -> str:
        calls.append(argv)
        return "Available devices:\n  CUDA0: RTX 4090 (24000 MiB, 23000 MiB free)\n"

    for i, name in enumerate(("alpha", "beta")):
        write_config(home, name, tiny_model, 8100 + i, gpu={"backend": "cuda"}, binary="embedded")
    rows = Linter(home, run=run, holder=lambda h, p: None).lint(
        [Target.of_instance(home, "alpha"), Target.of_instance(home, "beta")]
    )
    assert [r.level for r in rows if r.check == "gpu-device"] == ["ok", "ok"]
    assert len(calls) == 1
    assert calls[0][-1] == "--list-devices"


def test_port_holder_names_the_listener(
    foreign_listener: tuple[subprocess.Popen[str], int],
) -> None:
    proc, port = foreign_listener
    holder = port_holder("127.0.0.1", port)
    assert holder is not None
    assert holder.pid == proc.pid
    assert holder.command is not None and LISTENER[:20] in holder.command
    # a wildcard address overlaps the loopback listener
    assert port_holder("0.0.0.0", port) is not None


def test_port_holder_free_port() -> None:
    assert port_holder("127.0.0.1", free_port()) is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux SO_REUSEADDR semantics")
def test_port_holder_after_a_server_stops() -> None:
    """Connections in TIME_WAIT do not make a just-freed port look held."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = srv.accept()
    conn.close()  # the server side closes first, so its end enters TIME_WAIT
    client.close()
    srv.close()
    assert port_holder("127.0.0.1", port) is None


def test_port_holder_unknown_host_raises() -> None:
    with pytest.raises(OSError):
        port_holder("no-such-host.invalid", 8001)


def test_port_holder_str() -> None:
    assert str(PortHolder(1234, "python3 -m http.server 8002")) == (
        "PID 1234 (python3 -m http.server 8002)"
    )
    assert str(PortHolder(1234, None)) == "PID 1234"
    assert str(PortHolder(None, None)) == "an unknown process"


def test_find_free_port_skips_taken_and_held(
    foreign_listener: tuple[subprocess.Popen[str], int],
) -> None:
    _, held = foreign_listener
    start = held - 1
    taken = {start}
    chosen = find_free_port("127.0.0.1", start, taken=taken)
    assert chosen not in (start, held)
    assert chosen > held
    assert port_holder("127.0.0.1", chosen) is None


@pytest.mark.parametrize(("total_mib", "level"), [(1, "warning"), (24000, "ok")])
def test_instances_that_overfill_one_device_warn(
    home: Home, tiny_model: Path, total_mib: int, level: str
) -> None:
    def run(argv: list[str]) -> str:
        return f"Available devices:\n  Vulkan0: Test GPU ({total_mib} MiB, {total_mib} MiB free)\n"

    for i, name in enumerate(("alpha", "beta")):
        write_config(
            home,
            name,
            tiny_model,
            8200 + i,
            binary="embedded",
            gpu={"backend": "vulkan", "device_id": 0, "layers": 999},
        )
    rows = Linter(home, run=run, holder=lambda h, p: None).lint(
        [Target.of_instance(home, "alpha"), Target.of_instance(home, "beta")]
    )
    memory = [r for r in rows if r.check == "gpu-memory"]
    assert [r.level for r in memory] == [level, level]
    if level == "warning":
        assert "Vulkan0 has 1 MiB" in memory[0].message
        assert "alpha" in memory[0].message and "beta" in memory[0].message


def test_lint_symlinked_log_file_is_an_error(
    cli: Cli, home: Home, tiny_model: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.log"
    outside.write_text("not ours\n")
    write_config(home, "alpha", tiny_model, free_port())
    loaded = load_file(home.config_path("alpha"))
    out, _ = log_paths(loaded, home.root)
    out.parent.mkdir(parents=True)
    out.symlink_to(outside)
    rows = lint_json(cli, "alpha", code=1)
    logs = row(rows, "alpha", "logs-writable")
    assert logs["level"] == "error"
    assert f"{out} is a symbolic link" in logs["message"], logs


def test_lint_checks_the_binary(cli: Cli, home: Home, tiny_model: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain-server"
    plain.write_text("#!/bin/sh\n")
    plain.chmod(0o644)
    folder = tmp_path / "a-folder"
    folder.mkdir()
    write_config(home, "alpha", tiny_model, free_port(), binary=str(tmp_path / "missing"))
    write_config(home, "beta", tiny_model, free_port(), binary=str(folder))
    write_config(home, "gamma", tiny_model, free_port(), binary=str(plain))
    write_config(home, "delta", tiny_model, free_port(), binary="embedded")
    write_config(home, "eps", tiny_model, free_port())
    rows = lint_json(cli, code=1)
    alpha, beta, gamma = (row(rows, n, "binary") for n in ("alpha", "beta", "gamma"))
    assert alpha["level"] == beta["level"] == gamma["level"] == "error"
    assert alpha["message"].startswith(f"binary: {tmp_path / 'missing'} does not exist")
    assert beta["message"].startswith(f"binary: {folder} is a directory"), beta
    assert gamma["message"].startswith(f"binary: {plain} is not executable"), gamma
    delta = row(rows, "delta", "binary")
    assert delta["level"] == "ok" and "embedded" in delta["message"], delta
    eps = row(rows, "eps", "binary")  # the cli fixture sets LLAMA_SERVER=embedded
    assert eps["level"] == "ok" and "LLAMA_SERVER" in eps["message"], eps


def test_lint_truncated_and_unknown_version_gguf_are_errors(
    cli: Cli, home: Home, tiny_model: Path, tmp_path: Path
) -> None:
    data = tiny_model.read_bytes()
    half = tmp_path / "half.gguf"  # a partial download: the header whole, the tensors not
    half.write_bytes(data[: len(data) // 2])
    header_cut = tmp_path / "cut.gguf"  # cut inside the header itself
    header_cut.write_bytes(data[:64])
    future = tmp_path / "future.gguf"
    future.write_bytes(data[:4] + (99).to_bytes(4, "little") + data[8:])
    for name, model in (("half", half), ("cut", header_cut), ("future", future)):
        write_config(home, name, model, free_port())
    write_config(home, "whole", tiny_model, free_port())
    rows = lint_json(cli, code=1)
    for name in ("half", "cut", "future"):
        assert row(rows, name, "model")["level"] == "error", row(rows, name, "model")
    assert "truncated" in row(rows, "half", "model")["message"]
    assert "truncated" in row(rows, "cut", "model")["message"]
    assert "version 99" in row(rows, "future", "model")["message"]
    whole = row(rows, "whole", "model")
    assert whole["level"] == "ok" and "GGUF v3" in whole["message"], whole


def test_lint_args_overriding_managed_flags_are_errors(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    args = ["--port", "9000", "--metrics", "--ctx-size=1024", "-a", "x", "-m", "other.gguf"]
    write_config(home, "alpha", tiny_model, free_port(), args=args)
    write_config(home, "beta", tiny_model, free_port(), args=["-dev", "none", "--metrics"])
    write_config(
        home, "gamma", tiny_model, free_port(), gpu={"backend": "vulkan"}, args=["-dev", "Vulkan1"]
    )
    rows = lint_json(cli, code=1)
    alpha = row(rows, "alpha", "args")
    assert alpha["level"] == "error"
    for text in ("args[0] '--port'", "server.port", "args[3]", "model.context_size"):
        assert text in alpha["message"], alpha
    assert "args[6] '-m'" in alpha["message"] and "model.path" in alpha["message"], alpha
    assert "--metrics" not in alpha["message"] and "'-a'" not in alpha["message"], alpha
    beta = row(rows, "beta", "args")  # on the CPU no -dev is passed: the args may choose
    assert beta["level"] == "ok", beta
    gamma = row(rows, "gamma", "args")
    assert gamma["level"] == "error" and "gpu.device_id" in gamma["message"], gamma


def test_managed_flags_cover_what_the_engine_passes(home: Home, tiny_model: Path) -> None:
    from llama_orchestrator.doctor.argscheck import MANAGED
    from llama_orchestrator.engine.binary import ResolvedBinary
    from llama_orchestrator.engine.command import ALIAS_FLAGS, AUTO_FLAGS, build_argv

    for backend in ("cpu", "vulkan", "cuda", "metal"):
        path = write_config(home, "alpha", tiny_model, 8001, gpu={"backend": backend})
        argv = build_argv(load_file(path), ResolvedBinary("binary", "PATH", Path("srv")))
        # AUTO_FLAGS (--metrics) carry no config value, and -a NAME only names the answers
        # (issue 20): args may say them, and the engine then leaves its own out
        flags = {a for a in argv[1:] if a.startswith("-")} - set(AUTO_FLAGS) - set(ALIAS_FLAGS)
        assert flags <= set(MANAGED), flags - set(MANAGED)


@pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")
def test_lint_api_key_in_a_config_readable_by_others_warns(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    path = write_config(home, "alpha", tiny_model, free_port(), args=["--api-key", "s3cret-key"])
    write_config(home, "beta", tiny_model, free_port(), env={"LLAMA_API_KEY": "other-key"})
    write_config(home, "gamma", tiny_model, free_port())
    for name in ("alpha", "beta", "gamma"):
        home.config_path(name).chmod(0o644)
    rows = lint_json(cli)
    alpha = row(rows, "alpha", "secrets")
    assert alpha["level"] == "warning", alpha
    assert "0644" in alpha["message"] and f"chmod 600 {path}" in alpha["message"], alpha
    assert "s3cret-key" not in json.dumps(rows)
    assert row(rows, "beta", "secrets")["level"] == "warning"
    assert row(rows, "gamma", "secrets")["level"] == "ok"
    path.chmod(0o600)
    assert row(lint_json(cli), "alpha", "secrets")["level"] == "ok"


@pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")
def test_state_readable_by_others_is_fixed_and_linted(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    write_config(home, "alpha", tiny_model, free_port())
    home.state_dir.mkdir(parents=True)
    home.state_dir.chmod(0o755)
    home.token_path.write_text("a-token-of-old")
    home.token_path.chmod(0o644)
    rows = lint_json(cli)
    state = row(rows, "(home)", "state-mode")
    assert state["level"] == "warning", state
    assert f"chmod 700 {home.state_dir}" in state["message"], state
    assert f"chmod 600 {home.token_path}" in state["message"], state

    home.ensure()  # what the CLI and the daemon do before they use the home
    assert stat.S_IMODE(home.state_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(home.token_path.stat().st_mode) == 0o600
    assert row(lint_json(cli), "(home)", "state-mode")["level"] == "ok"

    home.state_dir.chmod(0o755)
    home.token_path.chmod(0o644)
    out = cli("daemon", "start", timeout=60)
    assert out.returncode == 0, out.stderr
    assert stat.S_IMODE(home.state_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(home.token_path.stat().st_mode) == 0o600
