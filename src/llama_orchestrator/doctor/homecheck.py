"""The ``(home)`` row of ``config lint``: is the state folder private? (issue 10)

``state/`` holds the control API's bearer token and full command lines (an ``--api-key``
among the args, say): user-only, ``0700`` for the folder and ``0600`` for the token.
:meth:`llama_orchestrator.home.Home.ensure` sets those modes whenever the CLI or the
daemon prepares the home; lint warns about what it finds wider.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from llama_orchestrator.doctor.verdict import Named, Verdict
from llama_orchestrator.home import STATE_DIR_MODE, TOKEN_MODE, Home

HOME_LABEL = "(home)"  # lint's row label for the home itself; never an instance name


def _wider(path: Path, allowed: int) -> str | None:
    """``chmod`` advice when ``path`` has mode bits beyond ``allowed``, else None."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return None
    if mode & ~allowed:
        return f"{path} is readable by others (mode {mode:04o}): chmod {allowed:o} {path}"
    return None


def state_verdict(home: Home) -> Verdict:
    if os.name == "nt":
        return "ok", "file modes are not checked on Windows"
    problems = [
        p
        for p in (
            _wider(home.state_dir, STATE_DIR_MODE),
            _wider(home.token_path, TOKEN_MODE),
        )
        if p
    ]
    if problems:
        return "warning", "; ".join(problems)
    return "ok", f"{home.state_dir} and its token are readable by their owner only"


def home_checks(home: Home) -> list[Named]:
    """The home's rows; none before the home has a state folder."""
    if not home.state_dir.is_dir():
        return []
    return [("state-mode", state_verdict(home))]
