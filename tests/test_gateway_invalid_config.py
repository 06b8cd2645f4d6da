"""An instance whose config was never valid is neither listed nor routed; a request for it
gets 503 naming the config's problem, and `ps` does not claim a last good version is in
force when there never was one (issue 19, item 9)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from conftest import Cli, free_port, write_config
from helpers import wait_for

from llama_orchestrator.home import Home


def test_a_never_valid_config_is_not_routed_and_says_why(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    port = free_port()
    write_config(home, "alpha", tiny_model, free_port())
    write_config(home, "broken", tiny_model, free_port(), server={"prot": 9000})
    (home.root / "gateway.json").write_text(json.dumps({"port": port}))
    assert cli("daemon", "start").returncode == 0
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(f"{url}/health", trust_env=False).status_code == 200)

    listed = httpx.get(f"{url}/v1/models", trust_env=False).json()["data"]
    assert [m["id"] for m in listed] == ["alpha"]
    r = httpx.post(
        f"{url}/v1/completions",
        json={"model": "broken", "prompt": "x", "max_tokens": 1},
        trust_env=False,
    )
    assert r.status_code == 503, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_config"
    assert (
        "server.prot" in error["message"] and "cannot start until this is fixed" in error["message"]
    )
    r = httpx.post(f"{url}/v1/completions", json={"model": "nobody"}, trust_env=False)
    assert r.status_code == 404  # an unknown name is still not found

    out = cli("ps", "--all")
    assert "note: broken: invalid config:" in out.stderr
    assert "last good" not in out.stderr
    assert "cannot start until this is fixed" in out.stderr
