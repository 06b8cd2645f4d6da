"""engine/command.py: the llama-server argv, launch spec, logs and URLs, from parsed config."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from llama_orchestrator.config.loader import LoadedConfig, parse_config
from llama_orchestrator.engine.binary import ResolvedBinary
from llama_orchestrator.engine.command import (
    BACKENDS,
    base_url,
    build_argv,
    connect_host,
    device_args,
    device_label,
    device_selection,
    launch_spec,
    log_paths,
    slot_save_dir,
)

BIN = ResolvedBinary("binary", "config", Path("/opt/llama/llama-server"))
EMBEDDED = ResolvedBinary("embedded", "embedded", None)


def loaded(tmp_path: Path, name: str = "chat", **overrides: Any) -> LoadedConfig:
    data: dict[str, Any] = {"name": name, "model": {"path": "/models/x.gguf"}}
    data.update(overrides)
    path = tmp_path / "home" / "instances" / name / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data)
    path.write_text(text)
    return parse_config(text, path, name)


def full(tmp_path: Path, **overrides: Any) -> LoadedConfig:
    cfg: dict[str, Any] = {
        "model": {"path": "/models/x.gguf", "context_size": 2048, "batch_size": 256, "threads": 6},
        "server": {"host": "0.0.0.0", "port": 8123, "timeout": 90, "parallel": 3},
        "gpu": {"backend": "cpu", "device_id": 0, "layers": 12},
    }
    cfg.update(overrides)
    return loaded(tmp_path, **cfg)


def test_argv_order(tmp_path: Path) -> None:
    argv = build_argv(full(tmp_path), BIN)
    assert argv == [
        "/opt/llama/llama-server",
        "-m",
        str(Path("/models/x.gguf").resolve()),
        "-c",
        "2048",
        "-b",
        "256",
        "-t",
        "6",
        "--host",
        "0.0.0.0",
        "--port",
        "8123",
        "-to",
        "90",
        "-np",
        "3",
        "-ngl",
        "12",
        "-a",  # answers name the instance, not the model file (issue 20)
        "chat",
        "--metrics",  # always on (issue 12): the gateway's /metrics re-exports it
    ]
    assert all(isinstance(a, str) for a in argv)


def test_defaults_fill_every_flag(tmp_path: Path) -> None:
    argv = build_argv(loaded(tmp_path), BIN)
    flags = argv[1::2]
    assert flags == [
        "-m",
        "-c",
        "-b",
        "-t",
        "--host",
        "--port",
        "-to",
        "-np",
        "-ngl",
        "-a",
        "--metrics",
    ]
    assert argv[argv.index("--port") + 1] == "8001"
    assert argv[argv.index("-c") + 1] == "4096"


def test_embedded_prefix(tmp_path: Path) -> None:
    argv = build_argv(loaded(tmp_path), EMBEDDED)
    assert argv[:3] == [sys.executable, "-m", "llama_orchestrator.engine.embedded"]
    assert argv[3] == "-m"


@pytest.mark.parametrize(
    ("backend", "device_id", "expected"),
    [
        ("vulkan", 1, ["-dev", "Vulkan1"]),
        ("cuda", 0, ["-dev", "CUDA0"]),
        ("metal", 0, ["-dev", "MTL0"]),
        # issue 5: CUDA_VISIBLE_DEVICES=3 leaves one GPU, which the server calls CUDA0
        ("cuda", 3, ["-dev", "CUDA0"]),
        ("cpu", 0, []),
        ("cpu", 2, []),
    ],
)
def test_device_args(backend: str, device_id: int, expected: list[str]) -> None:
    assert device_args(backend, device_id) == expected


@pytest.mark.parametrize(
    ("backend", "expected"),
    [("vulkan", ["-dev", "Vulkan1"]), ("cuda", ["-dev", "CUDA0"]), ("metal", ["-dev", "MTL1"])],
)
def test_device_follows_ngl_then_args(tmp_path: Path, backend: str, expected: list[str]) -> None:
    lc = full(
        tmp_path,
        gpu={"backend": backend, "device_id": 1, "layers": 30},
        args=["--metrics", "-a", "my alias; rm -rf /", "--api-key", "$HOME"],
    )
    argv = build_argv(lc, BIN)
    ngl = argv.index("-ngl")
    assert argv[ngl + 1] == "30"
    assert argv[ngl + 2 : ngl + 4] == expected
    # args verbatim, each one element: no shell splitting, quoting or expansion; the
    # args' own --metrics is the only one
    assert argv[ngl + 4 :] == ["--metrics", "-a", "my alias; rm -rf /", "--api-key", "$HOME"]
    assert argv.count("--metrics") == 1


def test_cpu_has_no_dev_flag(tmp_path: Path) -> None:
    argv = build_argv(full(tmp_path, args=["--slots"]), BIN)
    assert "-dev" not in argv
    assert argv[-6:] == ["-ngl", "12", "-a", "chat", "--metrics", "--slots"]


def test_metrics_on_once_whatever_the_args_say(tmp_path: Path) -> None:
    # issue 12: every server gets --metrics, never twice
    assert build_argv(full(tmp_path), BIN).count("--metrics") == 1
    assert build_argv(full(tmp_path, args=["--metrics"]), BIN).count("--metrics") == 1
    embedded = build_argv(full(tmp_path), EMBEDDED)
    assert "--metrics" in embedded  # the embedded engine takes it (endpoint_metrics)
    from llama_orchestrator.engine.embedded import build_parser

    assert build_parser().parse_args(embedded[3:]).metrics is True


def test_device_label() -> None:
    assert device_label("cpu", 0) == "-"
    assert device_label("vulkan", 1) == "GPU:1"


def test_relative_model_path_resolves_against_config_folder(tmp_path: Path) -> None:
    lc = loaded(tmp_path, model={"path": "../../models/x.gguf"})
    expected = (tmp_path / "home" / "models" / "x.gguf").resolve()
    assert lc.model_path == expected
    argv = build_argv(lc, BIN)
    assert argv[argv.index("-m") + 1] == str(expected)


def test_model_path_with_spaces_stays_one_element(tmp_path: Path) -> None:
    lc = loaded(tmp_path, model={"path": "/my models/a b.gguf"})
    argv = build_argv(lc, BIN)
    assert argv[argv.index("-m") + 1] == str(Path("/my models/a b.gguf").resolve())


def test_log_paths_substitute_name_relative_to_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    out, err = log_paths(loaded(tmp_path, name="gemma-2b"), home)
    assert out == home / "logs" / "gemma-2b" / "stdout.log"
    assert err == home / "logs" / "gemma-2b" / "stderr.log"


def test_log_paths_custom_and_absolute(tmp_path: Path) -> None:
    home = tmp_path / "home"
    abs_err = tmp_path / "elsewhere" / "{name}-err.log"
    lc = loaded(
        tmp_path,
        name="chat",
        logs={"stdout": "custom/{name}/{name}.out", "stderr": str(abs_err)},
    )
    out, err = log_paths(lc, home)
    assert out == home / "custom" / "chat" / "chat.out"
    assert err == tmp_path / "elsewhere" / "chat-err.log"


def test_log_paths_expand_tilde(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("USERPROFILE", str(tmp_path / "user"))
    lc = loaded(tmp_path, name="chat", logs={"stdout": "~/logs/{name}.out"})
    out, err = log_paths(lc, tmp_path / "home")
    assert out == tmp_path / "user" / "logs" / "chat.out"
    assert err == tmp_path / "home" / "logs" / "chat" / "stderr.log"
    assert launch_spec(lc, BIN, tmp_path / "home").stdout == out


def test_log_paths_keep_a_stray_brace(tmp_path: Path) -> None:
    lc = loaded(tmp_path, name="chat", logs={"stdout": "logs/{name}/{oops.log"})
    assert log_paths(lc, tmp_path)[0] == tmp_path / "logs" / "chat" / "{oops.log"


def test_launch_spec(tmp_path: Path) -> None:
    lc = full(tmp_path, env={"GGML_VK_VISIBLE_DEVICES": "1", "PATH": "/custom/bin"})
    home = tmp_path / "home"
    spec = launch_spec(lc, BIN, home)
    folder = str(home / "kv" / lc.name) + os.sep  # each its own slot save folder (issue 21)
    plain = build_argv(lc, BIN)  # the config's args last, the slot save folder before them
    at = len(plain) - len(lc.config.args)
    assert spec.argv == [*plain[:at], "--slot-save-path", folder, *plain[at:]]
    assert (spec.stdout, spec.stderr) == log_paths(lc, home)
    assert spec.cwd == lc.path.parent
    assert spec.env_overrides == {"GGML_VK_VISIBLE_DEVICES": "1", "PATH": "/custom/bin"}


def test_the_slot_save_folder_is_the_users_when_args_name_one(tmp_path: Path) -> None:
    home = tmp_path / "home"
    given = loaded(tmp_path, args=["--slot-save-path", "/data/kv/"])
    assert launch_spec(given, BIN, home).argv.count("--slot-save-path") == 1
    assert slot_save_dir(given, home) == Path("/data/kv/")
    relative = loaded(tmp_path, args=["--slot-save-path=kv"])
    assert slot_save_dir(relative, home) == relative.path.parent / "kv"  # the server's cwd
    no_slots = loaded(tmp_path, args=["--no-slots"])
    assert slot_save_dir(no_slots, home) is None
    assert "--slot-save-path" not in launch_spec(no_slots, BIN, home).argv


def test_env_overrides_merge_over_base(tmp_path: Path) -> None:
    spec = launch_spec(full(tmp_path, env={"A": "new", "B": "b"}), BIN, tmp_path / "home")
    base = {"A": "old", "KEEP": "k"}
    env = spec.environ(base)
    marker = {"LLAMA_ORCH_HOME": str(tmp_path / "home"), "LLAMA_ORCH_INSTANCE": "chat"}
    assert env == {"A": "new", "B": "b", "KEEP": "k", **marker}  # the marker names us
    assert base == {"A": "old", "KEEP": "k"}, "base must not be mutated"


def test_env_defaults_to_process_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMA_ORCH_TEST_MARKER", "from-daemon")
    monkeypatch.setenv("B", "daemon")
    env = launch_spec(full(tmp_path, env={"B": "cfg"}), BIN, tmp_path / "h").environ()
    assert env["LLAMA_ORCH_TEST_MARKER"] == "from-daemon"
    assert env["B"] == "cfg"


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8001"),
        ("0.0.0.0", "http://127.0.0.1:8001"),
        ("::", "http://[::1]:8001"),
        ("::1", "http://[::1]:8001"),
        ("localhost", "http://localhost:8001"),
        ("192.168.1.5", "http://192.168.1.5:8001"),
    ],
)
def test_base_url(host: str, url: str) -> None:
    assert base_url(host, 8001) == url


def test_connect_host_wildcards() -> None:
    assert connect_host("0.0.0.0") == "127.0.0.1"
    assert connect_host("::") == "::1"


# --- the backend table (issue 5, part 2) -----------------------------------------------


@pytest.mark.parametrize(
    ("backend", "device_id", "args", "env"),
    [
        ("cpu", 0, [], {}),
        ("cpu", 3, [], {}),
        ("vulkan", 0, ["-dev", "Vulkan0"], {}),
        ("vulkan", 2, ["-dev", "Vulkan2"], {}),
        ("cuda", 0, ["-dev", "CUDA0"], {"CUDA_VISIBLE_DEVICES": "0"}),
        ("cuda", 2, ["-dev", "CUDA0"], {"CUDA_VISIBLE_DEVICES": "2"}),
        ("metal", 0, ["-dev", "MTL0"], {}),
    ],
)
def test_backend_table(backend: str, device_id: int, args: list[str], env: dict[str, str]) -> None:
    sel = device_selection(backend, device_id, base_env={})
    assert (sel.args, sel.env) == (args, env)


def test_every_schema_backend_has_a_rule() -> None:
    from typing import get_args

    from llama_orchestrator.config.schema import Backend

    assert set(BACKENDS) == set(get_args(Backend))


def test_no_obsolete_vulkan_variable() -> None:
    # GGML_VULKAN_DEVICE is ignored by current llama.cpp; GGML_VK_VISIBLE_DEVICES numbers
    # physical devices, not the Vulkan<N> of --list-devices: neither is generated.
    for device_id in range(4):
        assert device_selection("vulkan", device_id, base_env={}).env == {}


def test_cuda_indexes_an_inherited_visible_list() -> None:
    base = {"CUDA_VISIBLE_DEVICES": "2,3"}
    assert device_selection("cuda", 1, base_env=base).env == {"CUDA_VISIBLE_DEVICES": "3"}
    # an index past the list is passed through; lint reports the missing device
    assert device_selection("cuda", 5, base_env=base).env == {"CUDA_VISIBLE_DEVICES": "5"}


def test_cuda_launch_spec_generates_env(tmp_path: Path) -> None:
    lc = full(tmp_path, gpu={"backend": "cuda", "device_id": 1, "layers": 99}, env={"X": "1"})
    spec = launch_spec(lc, BIN, tmp_path / "home", base_env={})
    assert spec.argv[spec.argv.index("-dev") + 1] == "CUDA0"
    assert spec.generated_env == {"CUDA_VISIBLE_DEVICES": "1"}
    assert spec.env_overrides == {"CUDA_VISIBLE_DEVICES": "1", "X": "1"}
    assert spec.environ({"CUDA_VISIBLE_DEVICES": "0,1"})["CUDA_VISIBLE_DEVICES"] == "1"


def test_config_env_wins_over_generated(tmp_path: Path) -> None:
    lc = full(
        tmp_path,
        gpu={"backend": "cuda", "device_id": 1, "layers": 99},
        env={"CUDA_VISIBLE_DEVICES": "4,5"},
    )
    spec = launch_spec(lc, BIN, tmp_path / "home", base_env={})
    assert spec.env_overrides == {"CUDA_VISIBLE_DEVICES": "4,5"}
    assert spec.generated_env == {}
    # the user's own list stays visible, so device_id indexes it
    assert spec.argv[spec.argv.index("-dev") + 1] == "CUDA1"


def test_describe_marks_generated_env() -> None:
    from llama_orchestrator.views.describe_text import render_describe

    data: dict[str, Any] = {
        "name": "x",
        "config_file": "c",
        "model_file": "m",
        "model_info": {"error": "e"},
        "binary": {"path": "b", "source": "config", "version": "v"},
        "command_line": "b -m m",
        "env_overrides": {"CUDA_VISIBLE_DEVICES": "1", "MINE": "a b"},
        "env_generated": {"CUDA_VISIBLE_DEVICES": "1"},
        "runtime": None,
        "config": {},
        "events": [],
    }
    text = render_describe(data)
    assert "CUDA_VISIBLE_DEVICES=1 (generated) MINE='a b'" in text


@pytest.mark.parametrize(
    ("metrics", "shown"),
    [
        (
            {"enabled": True, "path": "/metrics", "source": "automatic"},
            "/metrics (enabled automatically)",
        ),
        ({"enabled": True, "path": "/metrics", "source": "args"}, "/metrics (in args)"),
        (
            {"enabled": False, "path": "/metrics", "source": "not in its command line"},
            "off (started without --metrics; a restart enables it)",
        ),
    ],
)
def test_describe_says_metrics(metrics: dict[str, Any], shown: str) -> None:
    from llama_orchestrator.views.describe_text import render_describe

    data: dict[str, Any] = {
        "name": "x",
        "config_file": "c",
        "model_file": "m",
        "model_info": {"error": "e"},
        "binary": {"path": "b", "source": "config", "version": "v"},
        "command_line": "b -m m",
        "metrics": metrics,
        "runtime": None,
        "config": {},
        "events": [],
    }
    assert f"Metrics:        {shown}" in render_describe(data).splitlines()


def test_answers_name_the_instance_unless_args_name_them(tmp_path: Path) -> None:
    """-a NAME: llama-server answers "model": NAME, not the model file's path (issue 20)."""
    argv = build_argv(full(tmp_path), BIN)
    assert argv[argv.index("-a") + 1] == "chat"
    own = build_argv(full(tmp_path, args=["--alias", "mine"]), BIN)
    assert "-a" not in own and own[-2:] == ["--alias", "mine"]
    assert build_argv(full(tmp_path, args=["--alias=mine"]), BIN).count("-a") == 0


def test_the_answered_name_is_known_unless_args_or_remote_set_it(tmp_path: Path) -> None:
    from llama_orchestrator.engine.command import answered_name

    assert answered_name(full(tmp_path)) == "chat"
    assert answered_name(full(tmp_path, args=["-a", "mine"])) is None
    path = tmp_path / "home" / "instances" / "far" / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"name": "far", "remote": {"url": "http://10.0.0.2:8080"}})
    path.write_text(text)
    remote = parse_config(text, path, "far")
    assert answered_name(remote) is None
