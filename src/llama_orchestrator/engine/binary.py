"""Which llama-server runs an instance.

Resolution order (first match wins): the instance's ``binary`` field, ``LLAMA_SERVER`` in
the environment, ``bin/llama-server[.exe]`` in the home, ``llama-server`` on PATH, and
finally the embedded engine (``python -m llama_orchestrator.engine.embedded``). The value
``embedded`` in the field or the variable selects the embedded engine directly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from llama_orchestrator.home import Home

ENV_BINARY = "LLAMA_SERVER"
EMBEDDED = "embedded"
EMBEDDED_MODULE = "llama_orchestrator.engine.embedded"
EXE = "llama-server.exe" if os.name == "nt" else "llama-server"


class BinaryError(RuntimeError):
    pass


@dataclass(frozen=True)
class ResolvedBinary:
    kind: str  # "binary" | "embedded"
    source: str  # "config" | "LLAMA_SERVER" | "home" | "PATH" | "embedded"
    path: Path | None  # the executable, None for the embedded engine

    @property
    def argv_prefix(self) -> list[str]:
        if self.path is None:
            return [sys.executable, "-m", EMBEDDED_MODULE]
        return [str(self.path)]

    @property
    def display(self) -> str:
        return "embedded (xllamacpp)" if self.path is None else str(self.path)

    def version(self) -> str | None:
        if self.path is None:
            from llama_orchestrator.engine.embedded import engine_version

            return engine_version()
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return _binary_version(str(self.path), stat.st_mtime_ns)


@lru_cache(maxsize=32)
def _binary_version(path: str, mtime_ns: int) -> str | None:
    """``llama-server --version`` prints ``version: 1234 (abcdef)`` (to stderr)."""
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=15, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in (out.stderr + "\n" + out.stdout).splitlines():
        if line.startswith("version:"):
            return line.split(":", 1)[1].strip()
    return None


def _explicit(value: str, source: str, base: Path | None) -> ResolvedBinary:
    if value == EMBEDDED:
        return ResolvedBinary("embedded", source, None)
    p = Path(value).expanduser()
    if not p.is_absolute() and base is not None and (os.sep in value or "/" in value):
        p = (base / p).resolve()
    if not p.is_absolute() and os.sep not in value and "/" not in value:
        found = shutil.which(value)
        if found is None:
            raise BinaryError(f"{source}: {value!r} is not on PATH")
        p = Path(found)
    if not p.is_file():
        raise BinaryError(f"{source}: llama-server binary {str(p)!r} does not exist")
    if not os.access(p, os.X_OK):
        raise BinaryError(f"{source}: llama-server binary {str(p)!r} is not executable")
    return ResolvedBinary("binary", source, p)


def resolve_binary(
    configured: str | None,
    home: Home,
    *,
    config_dir: Path | None = None,
    environ: dict[str, str] | None = None,
) -> ResolvedBinary:
    env = os.environ if environ is None else environ
    if configured:
        return _explicit(configured, "config 'binary'", config_dir)
    from_env = env.get(ENV_BINARY)
    if from_env:
        return _explicit(from_env, ENV_BINARY, None)
    in_home = home.bin_dir / EXE
    if in_home.is_file() and os.access(in_home, os.X_OK):
        return ResolvedBinary("binary", "home", in_home)
    on_path = shutil.which("llama-server")
    if on_path:
        return ResolvedBinary("binary", "PATH", Path(on_path))
    return ResolvedBinary("embedded", "embedded", None)
