"""Which llama-server runs an instance.

Resolution order (first match wins): the instance's ``binary`` field, ``LLAMA_SERVER`` in
the environment, ``bin/llama-server[.exe]`` in the home, ``llama-server`` on PATH, and
finally the embedded engine (``python -m llama_orchestrator.engine.embedded``). The value
``embedded`` in the field or the variable selects the embedded engine directly.

On Windows (through the injected ``Platform``): the home's binary is
``bin/llama-server.exe``; a configured path without an extension (``C:\\llama\\llama-server``)
also finds ``llama-server.exe`` (PATHEXT order, ``.exe`` first); a bare name goes to
``shutil.which``, which applies PATHEXT there; executable means an executable extension,
since ``os.access(X_OK)`` is always true on Windows. The resolved path is kept as one
argv element however many spaces it holds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from llama_orchestrator.engine.platform import Platform, current_platform
from llama_orchestrator.errors import OrchestratorError
from llama_orchestrator.home import Home

ENV_BINARY = "LLAMA_SERVER"
EMBEDDED = "embedded"
EMBEDDED_MODULE = "llama_orchestrator.engine.embedded"
BASE_NAME = "llama-server"
SOURCE_CONFIG = "config 'binary'"


class BinaryError(OrchestratorError, RuntimeError):
    """The llama-server named by ``field`` (``binary`` of a config, or ``LLAMA_SERVER``)
    cannot be used: ``file: field: reason (value)``, as config problems read (issue 10)."""

    def __init__(self, field: str, reason: str, value: str, file: Path | None = None) -> None:
        self.field, self.reason, self.value, self.file = field, reason, value, file
        if file is not None:
            head = f"{file}: {field}"
        else:  # no file to name: say where the value came from
            head = "config 'binary'" if field == "binary" else field
        super().__init__(f"{head}: {self._said()}")

    def _said(self) -> str:
        """The reason, then the value as written unless the reason shows it already."""
        v = self.value
        shown = bool(v.strip()) and (self.reason.startswith(f"{v} ") or repr(v) in self.reason)
        return self.reason if shown else f"{self.reason} ({self.value!r})"

    @property
    def detail(self) -> str:
        """The problem without its file: ``field: reason (value)``."""
        return f"{self.field}: {self._said()}"


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


_EMPTY = "must not be empty: remove the field to find llama-server, or use 'embedded'"


def _explicit(
    value: str, source: str, base: Path | None, plat: Platform, file: Path | None = None
) -> ResolvedBinary:
    field = "binary" if source == SOURCE_CONFIG else source

    def refuse(reason: str) -> BinaryError:
        return BinaryError(field, reason, value, file)

    if value == EMBEDDED:
        return ResolvedBinary("embedded", source, None)
    if not value.strip():
        raise refuse(_EMPTY)
    p = Path(value).expanduser()
    is_path = plat.has_dir_component(value)
    if not p.is_absolute() and base is not None and is_path:
        p = (base / p).resolve()
    if not p.is_absolute() and not is_path:
        found = plat.which(value)
        if found is None:
            raise refuse(f"{value!r} is not on PATH")
        p = Path(found)
    else:
        # "C:\\llama\\llama-server" means llama-server.exe on Windows.
        p = next((c for c in plat.exe_candidates(p) if c.is_file()), p)
    if p.is_dir():
        raise refuse(f"{p} is a directory, not a llama-server executable")
    if not p.is_file():
        raise refuse(f"{p} does not exist")
    if not plat.is_executable(p):
        raise refuse(f"{p} is not executable")
    return ResolvedBinary("binary", source, p)


def resolve_binary(
    configured: str | None,
    home: Home,
    *,
    config_dir: Path | None = None,
    config_file: Path | None = None,
    environ: dict[str, str] | None = None,
    platform: Platform | None = None,
) -> ResolvedBinary:
    """The llama-server to run; BinaryError when the one asked for cannot be used.

    ``config_file`` is named in the errors of ``binary``; without it, an instance's
    ``config.json`` in ``config_dir`` is (where the home keeps every instance's config).
    """
    plat = platform or current_platform()
    env = os.environ if environ is None else environ
    if config_file is not None:
        config_dir = config_dir or config_file.parent
    elif config_dir is not None:
        config_file = config_dir / "config.json"
    if configured is not None:  # "" too: a config problem, not "use the default" (issue 10)
        return _explicit(configured, SOURCE_CONFIG, config_dir, plat, config_file)
    from_env = env.get(ENV_BINARY)
    if from_env:
        return _explicit(from_env, ENV_BINARY, None, plat)
    in_home = home.bin_dir / plat.exe_name(BASE_NAME)
    if plat.is_executable(in_home):
        return ResolvedBinary("binary", "home", in_home)
    on_path = plat.which(BASE_NAME)
    if on_path:
        return ResolvedBinary("binary", "PATH", Path(on_path))
    return ResolvedBinary("embedded", "embedded", None)
