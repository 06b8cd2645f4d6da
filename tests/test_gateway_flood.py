"""Issue 19's major case, end to end on a real daemon: one client sending an endless
header (no key) to the gateway stalled the daemon's shared loop, every health check timed
out and the supervisor restarted healthy servers. Now the header is cut off at its limit
(431) and the servers' health is untouched."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from conftest import Cli, free_port, write_config
from helpers import events, ps_row, wait_for

from llama_orchestrator.home import Home

KEY = "sk-flood-test-key"
FAST = {"interval": 0.2, "timeout": 1, "retries": 2, "start_period": 30}


def test_an_endless_header_is_cut_off_and_no_server_is_restarted(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    port = free_port()
    home.root.mkdir(parents=True, exist_ok=True)
    (home.root / "gateway.json").write_text(json.dumps({"port": port, "api_keys": [KEY]}))
    for name in ("r1", "r2"):
        write_config(
            home, name, tiny_model, free_port(), healthcheck=FAST, gateway={"aliases": ["pool"]}
        )
        assert cli("up", name).returncode == 0

    daemon = psutil.Process(int(json.loads(home.daemon_pid_path.read_text())["pid"]))
    rss_before = daemon.memory_info().rss
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Big: ")
    sent, chunk = 0, b"a" * (1024 * 1024)
    t0 = time.monotonic()
    try:
        for _ in range(512):  # up to 512 MiB, as the report's client did
            s.sendall(chunk)
            sent += 1
    except OSError:
        pass  # the gateway answered and stopped reading
    answer = b""
    try:
        while piece := s.recv(65536):
            answer += piece
    except OSError:
        pass
    s.close()
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    # answered at once; what it sent after the limit was dropped unread, never held
    assert time.monotonic() - t0 < 10, (sent, time.monotonic() - t0)
    grown = (daemon.memory_info().rss - rss_before) / 2**20
    assert grown < 32, f"the daemon grew by {grown:.0f} MiB"  # 96 MiB grew it by 141

    def checks(name: str) -> list[dict[str, Any]]:
        return cli.json("health", name, "--json")["checks"]  # type: ignore[no-any-return]

    mark = time.time()
    for name in ("r1", "r2"):  # checks go on after it (three intervals), and none failed
        wait_for(lambda n=name: checks(n)[-1]["ts"] > mark + 0.6, what=f"checks of {name}")  # type: ignore[misc]
        assert all(c["ok"] for c in checks(name)), checks(name)
    r = httpx.get(
        f"http://127.0.0.1:{port}/v1/models",
        headers={"Authorization": f"Bearer {KEY}"},
        trust_env=False,
        timeout=5,
    )
    assert r.status_code == 200
    for name in ("r1", "r2"):
        row = ps_row(cli, name)
        assert row["status"] == "running" and row["restarts"] == 0, row
        unhealthy = [e for e in events(home, name) if e.get("new") == "unhealthy"]
        assert not unhealthy, unhealthy
