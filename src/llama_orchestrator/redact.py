"""Secret values out of what is shown: command lines and environments in events,
``ps --json``, ``describe`` and the web page. The server itself gets the real values;
the export turns the same flags and names into Kubernetes Secrets (export/container.py).

A leaf module (``re`` only), so ``ps``'s fast path can use it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

HIDDEN = "***"
# Flags whose value is a secret -> the variable llama-server also reads it from (its
# ``--help``); ``--mcp-servers-json``'s server definitions may carry credentials.
SECRET_FLAGS: dict[str, str] = {
    "--api-key": "LLAMA_API_KEY",
    "--hf-token": "HF_TOKEN",
    "-hft": "HF_TOKEN",
    "--mcp-servers-json": "LLAMA_ARG_MCP_SERVERS_JSON",
}
SECRET_ENVS = frozenset(SECRET_FLAGS.values())
# Environment variable names whose values look like secrets.
SECRET_NAME = re.compile(
    r"KEY|TOKEN|SECRET|PASSW|PASS|CREDENTIAL|AUTH|PRIVATE|BEARER|SESSION|COOKIE", re.IGNORECASE
)
# scheme://userinfo@: a URL that carries a user name or password.
URL_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s@]+@")


def secret_env(name: str, value: str) -> bool:
    """Is this environment variable's value a secret?"""
    return bool(name in SECRET_ENVS or SECRET_NAME.search(name) or URL_CREDENTIALS.search(value))


def shown_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with secret values replaced by ``***``."""
    return {k: HIDDEN if secret_env(k, v) else v for k, v in env.items()}


def shown_argv(argv: list[str]) -> list[str]:
    """``argv`` with the values of ``SECRET_FLAGS`` replaced by ``***``, and the user
    name and password of any URL in it too."""
    out: list[str] = []
    hide = False
    for arg in argv:
        flag, eq, _ = arg.partition("=")
        if hide:
            out.append(HIDDEN)
        elif eq and flag in SECRET_FLAGS:
            out.append(f"{flag}={HIDDEN}")
        else:
            out.append(URL_CREDENTIALS.sub(rf"\g<1>{HIDDEN}@", arg))
        hide = not hide and not eq and arg in SECRET_FLAGS
    return out
