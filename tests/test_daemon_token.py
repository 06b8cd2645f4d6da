"""A daemon whose token file is missing or replaced (issue 10, item 13).

The daemon keeps its bearer token in memory, so the CLI cannot recreate the file: it
must say at once what is wrong and how to recover, not wait 20 s and then claim that
the daemon did not start.
"""

from __future__ import annotations

from pathlib import Path

from conftest import Cli, free_port, write_config

from llama_orchestrator.home import Home


def test_missing_token_is_reported_at_once(cli: Cli, home: Home, tiny_model: Path) -> None:
    write_config(home, "alpha", tiny_model, free_port())
    assert cli("daemon", "start").returncode == 0
    home.token_path.unlink()
    out = cli("up", "alpha", "--detach", timeout=15)  # the old wait was 20 s
    assert out.returncode == 1
    assert "did not start" not in out.stderr
    assert str(home.token_path) in out.stderr and "missing" in out.stderr
    assert "llama-orch daemon stop" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    for args in (["health", "alpha"], ["gateway", "status"], ["daemon", "start"]):
        out = cli(*args, timeout=15)
        assert out.returncode == 1 and "missing" in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr
    # the advice works: stop without the token, then the next command starts afresh
    out = cli("daemon", "stop")
    assert out.returncode == 0, out.stderr
    out = cli("up", "alpha")
    assert out.returncode == 0, out.stderr
    assert home.token_path.read_text().strip()


def test_replaced_token_is_reported_at_once(cli: Cli, home: Home, tiny_model: Path) -> None:
    write_config(home, "alpha", tiny_model, free_port())
    assert cli("daemon", "start").returncode == 0
    home.token_path.write_text("not-the-daemons-token\n")
    out = cli("up", "alpha", "--detach", timeout=15)
    assert out.returncode == 1
    assert "did not start" not in out.stderr
    assert "does not accept" in out.stderr and "llama-orch daemon stop" in out.stderr
    assert "Traceback" not in out.stderr
