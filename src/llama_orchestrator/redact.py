"""Secret values out of what is shown: command lines and environments in events,
``ps --json``, ``describe`` and the web page. The server itself gets the real values;
the export turns the same names into Kubernetes Secrets (export/container.py).

A leaf module (``re`` only), so ``ps``'s fast path can use it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# Flags whose value is a secret: shown as *** wherever a command line is shown (events,
# describe, the web page); the server itself gets the value.
SECRET_FLAGS = frozenset({"--api-key", "--hf-token", "-hft"})
HIDDEN = "***"


# Environment variable names whose values are secrets (shown as ***, exported as Secrets).
SECRET_NAME = re.compile(
    r"KEY|TOKEN|SECRET|PASSW|PASS|CREDENTIAL|AUTH|PRIVATE|BEARER|SESSION|COOKIE", re.IGNORECASE
)


def shown_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with the values of secret-looking names replaced by ``***``."""
    return {k: HIDDEN if SECRET_NAME.search(k) else v for k, v in env.items()}


def shown_argv(argv: list[str]) -> list[str]:
    """``argv`` with the values of ``SECRET_FLAGS`` replaced by ``***``."""
    out: list[str] = []
    hide = False
    for arg in argv:
        flag, eq, _ = arg.partition("=")
        if hide:
            out.append(HIDDEN)
        elif eq and flag in SECRET_FLAGS:
            out.append(f"{flag}={HIDDEN}")
        else:
            out.append(arg)
        hide = not hide and not eq and arg in SECRET_FLAGS
    return out
