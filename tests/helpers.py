"""Test helpers: waiting on conditions with a deadline (never a bare sleep)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

T = TypeVar("T")

# The random-weight test model may end an answer at once, and its byte tokens are joined
# into one chunk per character: where counts are asserted, ask for lowercase letters (one
# token, one chunk each) with no early end.
LETTERS = {"ignore_eos": True, "grammar": "root ::= [a-z]+"}


def wait_for(check: Callable[[], T], timeout: float = 30.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def ps_row(cli: Any, name: str) -> dict[str, Any]:
    out = cli("ps", "--all", "--json")
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    return rows[name]  # type: ignore[no-any-return]


def chat(port: int) -> str:
    r = httpx.post(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        timeout=60,
        trust_env=False,
    )
    r.raise_for_status()
    return str(r.json()["choices"][0]["message"]["content"])


def health(port: int) -> int | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2, trust_env=False).status_code
    except httpx.HTTPError:
        return None


def gone(pid: int) -> bool:
    """The process has exited (a zombie awaiting its new parent's reap counts as gone)."""
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def fake_binary(tmp_path: Path) -> Path:
    """An executable that runs tests/fakeserver.py: the fake server, for fault injection."""
    script = tmp_path / "fake-llama-server"
    fake = Path(__file__).with_name("fakeserver.py")
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{fake}" "$@"\n')
    script.chmod(0o755)
    return script


def events(home: Any, name: str, limit: int = 1000) -> list[dict[str, Any]]:
    """The instance's recorded events, oldest first."""
    from llama_orchestrator.state.db import StateStore

    store = StateStore(home.db_path)
    try:
        return store.events(name, limit)
    finally:
        store.close()
