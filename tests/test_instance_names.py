"""Instance names are capped at 63 characters, as DNS labels (issue 10, item 7)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from conftest import Cli

from llama_orchestrator.home import Home, is_valid_name, name_problem


def test_name_over_63_characters_is_a_clear_error() -> None:
    assert is_valid_name("a" * 63)
    assert name_problem("a" * 63) is None
    for long in ("a" * 64, "a" * 300):
        assert not is_valid_name(long)
        problem = name_problem(long) or ""
        assert "63" in problem and "2" in problem, problem
        assert "\n" not in problem and len(problem) < 300, problem
    short = name_problem("a") or ""
    assert "2 to 63" in short, short


def test_name_over_255_characters_through_the_cli(cli: Cli, home: Home, tiny_model: Path) -> None:
    long = "a" * 300
    for args in (
        ("create", long, "--model", str(tiny_model)),
        ("describe", long),
        ("logs", long),
        ("config", "validate", long),
    ):
        out = cli(*args)
        assert out.returncode == 2, (args, out.returncode, out.stderr)
        assert "Traceback" not in out.stderr, out.stderr
        assert "63" in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_name_over_255_characters_through_the_api_is_a_400(cli: Cli, home: Home) -> None:
    out = cli("daemon", "start", timeout=60)
    assert out.returncode == 0, out.stderr
    url = json.loads(home.daemon_endpoint_path.read_text())["url"]
    token = home.token_path.read_text().strip()
    headers = {"Authorization": f"Bearer {token}"}
    long = "a" * 300
    r = httpx.get(f"{url}/v1/instances/{long}", headers=headers, timeout=10, trust_env=False)
    assert r.status_code == 400, r.text
    assert "63" in r.json()["detail"]
    r = httpx.post(f"{url}/v1/instances/{long}/start", headers=headers, timeout=10, trust_env=False)
    assert r.status_code == 400, r.text
