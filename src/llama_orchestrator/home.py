"""The workspace ("home"): where configs, state and logs live.

Chosen by ``--home``, then ``LLAMA_ORCH_HOME``, then the per-user data folder
(``platformdirs.user_data_dir("llama-orchestrator")``, e.g. ``~/.local/share/llama-orchestrator``
on Linux). Every path the project touches is derived here, so tests isolate themselves
by pointing ``LLAMA_ORCH_HOME`` at a temporary folder.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from llama_orchestrator.errors import OrchestratorError

ENV_HOME = "LLAMA_ORCH_HOME"
NAME_PATTERN = r"^[a-z0-9][a-z0-9-]*[a-z0-9]$"
# A DNS label's limit (issue 10): far below a file name's 255 bytes, so a name always
# makes a valid folder, and short enough to read in ``ps``.
NAME_MIN, NAME_MAX = 2, 63
_NAME_RE = re.compile(NAME_PATTERN)
# state/ holds the control API's token and full command lines: user-only (issue 10).
STATE_DIR_MODE = 0o700
TOKEN_MODE = 0o600


class HomeError(OrchestratorError, OSError):
    """A folder of the home cannot be made: a file, a link or no permission in its way."""


def default_home() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("llama-orchestrator", appauthor=False))


def resolve_home(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit:
        return Path(explicit).expanduser().absolute()
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser().absolute()
    return default_home()


def is_valid_name(name: str) -> bool:
    return len(name) <= NAME_MAX and bool(_NAME_RE.match(name))


def name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid instance name, or None when it is."""
    if is_valid_name(name):
        return None
    rule = (
        f"use {NAME_MIN} to {NAME_MAX} lower-case letters, digits and '-', "
        "starting and ending with a letter or digit (e.g. 'gemma-2b')"
    )
    if len(name) > NAME_MAX:
        shown = repr(name[:20] + "...")
        return f"invalid instance name {shown} ({len(name)} characters, at most {NAME_MAX}): {rule}"
    return f"invalid instance name {name!r}: {rule}"


def unknown_instance_message(unknown: list[str], known: list[str]) -> str:
    """The one wording of "no such instance", listing the ones that exist."""
    listing = ", ".join(known) if known else "none defined yet"
    return f"no instance named {', '.join(map(repr, unknown))} (known: {listing})"


def has_config(folder: Path) -> bool:
    """``folder`` holds a ``config.json`` of any kind: a folder or a dangling link in its
    place is a broken config to report, never an instance that is not there (issue 19)."""
    path = folder / "config.json"
    return path.is_symlink() or path.exists()


@dataclass(frozen=True)
class Home:
    root: Path

    @classmethod
    def resolve(cls, explicit: str | os.PathLike[str] | None = None) -> Home:
        return cls(resolve_home(explicit))

    @property
    def instances_dir(self) -> Path:
        return self.root / "instances"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    @property
    def db_path(self) -> Path:
        return self.state_dir / "state.sqlite"

    @property
    def daemon_pid_path(self) -> Path:
        return self.state_dir / "daemon.pid"

    @property
    def daemon_lock_path(self) -> Path:
        return self.state_dir / "daemon.lock"

    @property
    def daemon_endpoint_path(self) -> Path:
        """JSON with the control API's address; written by the daemon when it listens."""
        return self.state_dir / "daemon.json"

    @property
    def token_path(self) -> Path:
        return self.state_dir / "token"

    @property
    def gateway_path(self) -> Path:
        """The gateway's settings (optional: defaults apply when it does not exist)."""
        return self.root / "gateway.json"

    @property
    def daemon_log_path(self) -> Path:
        return self.logs_dir / "daemon.log"

    def instance_dir(self, name: str) -> Path:
        return self.instances_dir / name

    def config_path(self, name: str) -> Path:
        return self.instances_dir / name / "config.json"

    def instance_names(self) -> list[str]:
        """Names of the folders under ``instances/`` that hold a ``config.json``."""
        if not self.instances_dir.is_dir():
            return []
        return sorted(p.name for p in self.instances_dir.iterdir() if has_config(p))

    def ensure(self) -> None:
        """Create the home's folders; state, logs and the token readable by the user only.

        Modes found wider (a folder made by an older version, a token copied in) are
        narrowed here, where the CLI and the daemon prepare the home (issue 10).
        """
        # State and logs hold full command lines (an --api-key in `args`, say): user-only.
        for d, mode in ((self.instances_dir, 0o777), (self.state_dir, STATE_DIR_MODE),
                        (self.logs_dir, STATE_DIR_MODE)):  # fmt: skip
            try:
                d.mkdir(mode=mode, parents=True, exist_ok=True)
            except OSError as e:  # a file or a dangling link where the folder goes (issue 19)
                what = "it is a file, not a folder" if d.is_file() else e.strerror or e
                if d.is_symlink() and not d.exists():
                    what = f"it is a link to {os.readlink(d)}, which does not exist"
                raise HomeError(
                    f"cannot create the folder {d} ({what}): move it aside or remove it"
                ) from None
        for path, mode in ((self.state_dir, STATE_DIR_MODE), (self.token_path, TOKEN_MODE)):
            _narrow(path, mode)


def _narrow(path: Path, allowed: int) -> None:
    """Drop the mode bits of ``path`` beyond ``allowed`` (nothing on Windows, or not ours)."""
    if os.name == "nt":
        return
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & ~allowed:
            path.chmod(mode & allowed)
    except OSError:  # gone, or someone else's: config lint reports what stays wide
        pass
