"""An on-demand start that fails tells the API client the end of the server's stderr, as
`up` does (issue 19, item 13)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from conftest import Cli, free_port, write_config
from helpers import wait_for

from llama_orchestrator.home import Home


def test_a_failed_on_demand_start_shows_the_stderr_tail(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    port = free_port()
    write_config(home, "alpha", tiny_model, free_port(), args=["--no-such-flag"])
    (home.root / "gateway.json").write_text(json.dumps({"port": port}))
    assert cli("daemon", "start").returncode == 0
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(f"{url}/health", trust_env=False).status_code == 200)
    up = cli("up", "alpha")
    assert up.returncode != 0
    said_by_up = "unrecognized arguments: --no-such-flag"
    assert said_by_up in up.stderr
    body = {"model": "alpha", "prompt": "x", "max_tokens": 1}
    r = httpx.post(f"{url}/v1/completions", json=body, timeout=60, trust_env=False)
    assert r.status_code == 503, r.text
    message = r.json()["error"]["message"]
    assert "the end of its stderr:" in message and said_by_up in message, message
