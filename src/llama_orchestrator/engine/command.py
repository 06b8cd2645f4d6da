"""The llama-server command line and environment, built from a validated config.

argv is always a list (never a shell string): ``-m -c -b -t --host --port -to -np -ngl``,
the backend's device selection, then the config's ``args`` verbatim.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from llama_orchestrator.config.loader import LoadedConfig
from llama_orchestrator.engine.binary import ResolvedBinary

# llama-server's ``-dev`` names devices by backend prefix and index (``--list-devices``).
DEVICE_PREFIX = {"vulkan": "Vulkan", "cuda": "CUDA", "metal": "MTL"}


def device_label(backend: str, device_id: int) -> str:
    """What ``ps`` shows in DEVICE: ``-`` for the CPU, else ``GPU:<id>``."""
    return "-" if backend == "cpu" else f"GPU:{device_id}"


def device_args(backend: str, device_id: int) -> list[str]:
    prefix = DEVICE_PREFIX.get(backend)
    return [] if prefix is None else ["-dev", f"{prefix}{device_id}"]


@dataclass(frozen=True)
class LaunchSpec:
    argv: list[str]
    env_overrides: dict[str, str]
    stdout: Path
    stderr: Path
    cwd: Path

    def environ(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        env.update(self.env_overrides)
        return env


def build_argv(loaded: LoadedConfig, binary: ResolvedBinary) -> list[str]:
    c = loaded.config
    argv = [
        *binary.argv_prefix,
        "-m",
        str(loaded.model_path),
        "-c",
        str(c.model.context_size),
        "-b",
        str(c.model.batch_size),
        "-t",
        str(c.model.threads),
        "--host",
        c.server.host,
        "--port",
        str(c.server.port),
        "-to",
        str(c.server.timeout),
        "-np",
        str(c.server.parallel),
        "-ngl",
        str(c.gpu.layers),
        *device_args(c.gpu.backend, c.gpu.device_id),
        *c.args,
    ]
    return argv


def log_paths(loaded: LoadedConfig, home_root: Path) -> tuple[Path, Path]:
    c = loaded.config
    out = Path(c.logs.stdout.replace("{name}", c.name))
    err = Path(c.logs.stderr.replace("{name}", c.name))
    return (
        out if out.is_absolute() else home_root / out,
        err if err.is_absolute() else home_root / err,
    )


def launch_spec(loaded: LoadedConfig, binary: ResolvedBinary, home_root: Path) -> LaunchSpec:
    out, err = log_paths(loaded, home_root)
    return LaunchSpec(
        argv=build_argv(loaded, binary),
        env_overrides=dict(loaded.config.env),
        stdout=out,
        stderr=err,
        cwd=loaded.path.parent,
    )


def connect_host(host: str) -> str:
    """Where to reach a server that listens on ``host`` (wildcards mean loopback)."""
    if host in ("0.0.0.0", "", "*"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def base_url(host: str, port: int) -> str:
    h = connect_host(host)
    return f"http://[{h}]:{port}" if ":" in h else f"http://{h}:{port}"
