"""What ``args`` may not say, and where a config holds a secret (issue 10).

``args`` are passed verbatim after the flags the engine builds from the config
(:func:`llama_orchestrator.engine.command.build_argv`); one of those flags given again
would override a value that ``ps``, the health checks, the port checks and the gateway
take from the config, so lint names the field to set instead (``args``). An API key in
``args`` or ``env`` makes the config file a secret: it should be readable by its owner
only (``secrets``).
"""

from __future__ import annotations

import os
import stat

from llama_orchestrator.config.loader import LoadedConfig
from llama_orchestrator.doctor.verdict import Verdict

_DEVICE = "gpu.backend and gpu.device_id"

# Every flag build_argv passes (tests check the engine passes no other), each spelling
# llama-server accepts, and the config field that sets it.
MANAGED: dict[str, str] = {
    "-m": "model.path",
    "--model": "model.path",
    "-c": "model.context_size",
    "--ctx-size": "model.context_size",
    "-b": "model.batch_size",
    "--batch-size": "model.batch_size",
    "-t": "model.threads",
    "--threads": "model.threads",
    "--host": "server.host",
    "--port": "server.port",
    "-to": "server.timeout",
    "--timeout": "server.timeout",
    "-np": "server.parallel",
    "--parallel": "server.parallel",
    "-ngl": "gpu.layers",
    "--gpu-layers": "gpu.layers",
    "--n-gpu-layers": "gpu.layers",
    "-dev": _DEVICE,
    "--device": _DEVICE,
}
API_KEY_FLAG = "--api-key"
API_KEY_ENV = "LLAMA_API_KEY"  # llama-server reads its --api-key from this too (`--help`)


def _flag(arg: str) -> str:
    """``--port=9000`` -> ``--port``; other arguments as they are."""
    return arg.split("=", 1)[0] if arg.startswith("--") else arg


def args_verdict(cfg: LoadedConfig) -> Verdict:
    """Errors for each ``args`` entry that repeats a flag the engine passes."""
    c = cfg.config
    found = []
    for i, arg in enumerate(c.args):
        field = MANAGED.get(_flag(arg))
        if field is None or (field == _DEVICE and c.gpu.backend == "cpu"):
            continue  # on the CPU no -dev is passed: the args may choose devices
        found.append(
            f"args[{i}] {arg.split('=', 1)[0]!r} overrides {field}, which the orchestrator "
            f"passes: remove it from args and set {field}"
        )
    if found:
        return "error", "; ".join(found)
    if not c.args:
        return "ok", "no extra arguments"
    return "ok", f"{len(c.args)} extra argument(s), none overriding a config field"


def _secret_in(cfg: LoadedConfig) -> str | None:
    """Where the config holds an API key (``args --api-key``, ``env``), or None."""
    c = cfg.config
    if any(_flag(a) == API_KEY_FLAG for a in c.args):
        return f"args {API_KEY_FLAG}"
    if API_KEY_ENV in c.env:
        return f"env {API_KEY_ENV}"
    return None


def secrets_verdict(cfg: LoadedConfig) -> Verdict:
    """A config holding an API key is readable by its owner only (0600)."""
    where = _secret_in(cfg)
    if where is None:
        return "ok", "no API key in args or env"
    if os.name == "nt":
        return "ok", f"an API key in {where}; file modes are not checked on Windows"
    try:
        mode = stat.S_IMODE(cfg.path.stat().st_mode)
    except OSError as e:
        return "warning", f"an API key in {where}; cannot check the file's mode: {e.strerror}"
    if mode & 0o077:
        return "warning", (
            f"an API key in {where}, and the file is readable by others (mode {mode:04o}): "
            f"chmod 600 {cfg.path}"
        )
    return "ok", f"an API key in {where}; the file is readable by its owner only"
