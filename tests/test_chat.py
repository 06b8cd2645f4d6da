"""``llama-orch chat NAME "prompt"``: a completion through the gateway, streamed to the
terminal, with tokens/s at the end (issue 10: try an instance in one command)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from conftest import Cli, free_port, write_config
from helpers import ps_row

from llama_orchestrator.home import Home

KEY = "secret-key-123"
SPEED = re.compile(r"(\d+) tokens? at [\d.]+ tokens/s \([\d.]+s in all\)")


def _gateway(home: Home, **settings: Any) -> int:
    port = free_port()
    home.root.mkdir(parents=True, exist_ok=True)
    (home.root / "gateway.json").write_text(json.dumps({"port": port, **settings}))
    return port


def _tokens(stderr: str) -> int:
    m = SPEED.search(stderr)
    assert m, stderr
    return int(m.group(1))


def test_chat_streams_a_completion_through_the_gateway(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    _gateway(home)
    write_config(home, "alpha", tiny_model, free_port())
    write_config(home, "beta", tiny_model, free_port())
    assert cli("up", "alpha").returncode == 0

    out = cli("chat", "alpha", "The capital of France is", "--max-tokens", "8")
    assert out.returncode == 0, out.stderr
    assert 1 <= _tokens(out.stderr) <= 8
    assert out.stdout == "" or out.stdout.endswith("\n")  # the answer ends its line

    out = cli("chat", "alpha", "Hello", "--chat", "-n", "4")
    assert out.returncode == 0, out.stderr
    assert 1 <= _tokens(out.stderr) <= 4

    # a stopped instance is started on demand by the gateway
    out = cli("chat", "beta", "Once upon a time", "-n", "4")
    assert out.returncode == 0, out.stderr
    assert ps_row(cli, "beta")["status"] == "running"

    # the prompt from stdin
    import subprocess
    import sys

    piped = subprocess.run(
        [sys.executable, "-m", "llama_orchestrator", "chat", "alpha", "-", "-n", "2"],
        input="The sky is",
        capture_output=True,
        text=True,
        env=cli.env,
        timeout=120,
        check=False,
    )
    assert piped.returncode == 0, piped.stderr

    # bad input: one line, exit non-zero, no traceback
    for args, code, words in (
        (["chat", "nope", "hi"], 1, "model 'nope' not found"),
        (["chat", "alpha", ""], 2, "empty prompt"),
        (["chat", "alpha", "hi", "-n", "0"], 2, "--max-tokens"),
    ):
        out = cli(*args)
        assert out.returncode == code, (args, out.stderr)
        assert words in out.stderr and "Traceback" not in out.stderr, (args, out.stderr)


def test_chat_sends_the_gateway_api_key(cli: Cli, home: Home, tiny_model: Path) -> None:
    _gateway(home, api_keys=[KEY])
    write_config(home, "alpha", tiny_model, free_port())
    out = cli("chat", "alpha", "hi", "-n", "2")  # also starts the daemon, and alpha on demand
    assert out.returncode == 1
    assert "--api-key" in out.stderr and "LLAMA_ORCH_API_KEY" in out.stderr
    out = cli("chat", "alpha", "hi", "-n", "2", "--api-key", "wrong-key-0000")
    assert out.returncode == 1 and "invalid API key" in out.stderr, out.stderr
    out = cli("chat", "alpha", "hi", "-n", "2", env={"LLAMA_ORCH_API_KEY": KEY})
    assert out.returncode == 0, out.stderr
    assert _tokens(out.stderr) >= 1


def test_chat_says_why_the_gateway_is_not_listening(cli: Cli, home: Home, tiny_model: Path) -> None:
    _gateway(home, enabled=False)
    write_config(home, "alpha", tiny_model, free_port())
    out = cli("chat", "alpha", "hi")
    assert out.returncode == 1
    assert "gateway is not listening" in out.stderr and "disabled" in out.stderr
    assert "Traceback" not in out.stderr
