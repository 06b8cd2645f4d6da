"""The daemon's control API and `daemon start|stop|status|run`, through the real CLI."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from conftest import Cli, free_port, write_config
from helpers import wait_for

from llama_orchestrator.home import Home


def start_daemon(cli: Cli) -> tuple[str, str, int]:
    out = cli("daemon", "start", timeout=60)
    assert out.returncode == 0, out.stderr
    endpoint = json.loads(cli.home.daemon_endpoint_path.read_text())
    token = cli.home.token_path.read_text().strip()
    return endpoint["url"], token, int(endpoint["pid"])


def get(url: str, path: str, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.get(url + path, headers=headers, timeout=10, trust_env=False)


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait(30)
    return p.pid


def test_token_auth_and_daemon_info(cli: Cli, home: Home) -> None:
    url, token, pid = start_daemon(cli)
    assert url.startswith("http://127.0.0.1:")
    assert stat.S_IMODE(home.token_path.stat().st_mode) == 0o600
    assert len(token) >= 32

    assert get(url, "/v1/daemon").status_code == 401
    assert get(url, "/v1/daemon", "wrong-" + token).status_code == 401
    assert get(url, "/v1/daemon", token[:-1]).status_code == 401
    r = httpx.get(url + "/v1/instances", headers={"Authorization": "Basic eDp5"}, trust_env=False)
    assert r.status_code == 401
    r = httpx.get(url + "/v1/daemon", headers={"Authorization": token}, trust_env=False)
    assert r.status_code == 401, "the token must come as a Bearer credential"

    r = get(url, "/v1/daemon", token)
    assert r.status_code == 200, r.text
    info = r.json()
    assert info["pid"] == pid
    assert psutil.Process(pid).is_running()
    assert info["home"] == str(home.root)
    assert info["uptime_s"] >= 0

    pid_file = json.loads(home.daemon_pid_path.read_text())
    assert pid_file["pid"] == pid

    # a second `daemon start` is a no-op on the same daemon
    out = cli("daemon", "start")
    assert out.returncode == 0, out.stderr
    assert "already running" in out.stderr
    assert json.loads(home.daemon_pid_path.read_text())["pid"] == pid


def test_openapi_describes_the_rest_api(cli: Cli) -> None:
    url, _token, _ = start_daemon(cli)
    r = get(url, "/openapi.json")  # discoverable without the token
    assert r.status_code == 200
    paths = r.json()["paths"]
    assert "post" in paths["/v1/instances/{name}/start"]
    for path in (
        "/v1/daemon",
        "/v1/daemon/shutdown",
        "/v1/instances",
        "/v1/instances/{name}",
        "/v1/instances/{name}/events",
        "/v1/instances/{name}/stop",
        "/v1/instances/{name}/restart",
    ):
        assert path in paths, path


def test_instance_lookup_errors(cli: Cli, home: Home, tmp_path: Path) -> None:
    write_config(home, "alpha", tmp_path / "model.gguf", 8011)
    write_config(home, "beta-2", tmp_path / "model.gguf", 8012)
    url, token, _ = start_daemon(cli)

    r = get(url, "/v1/instances/alpha", token)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert (body["name"], body["status"], body["desired"]) == ("alpha", "stopped", "stopped")

    r = get(url, "/v1/instances/gamma", token)
    assert r.status_code == 404
    detail = r.json()["detail"]
    assert "gamma" in detail and "alpha" in detail and "beta-2" in detail
    # a command on an unknown instance is refused in the commands' shape (README)
    r = httpx.post(f"{url}/v1/instances/gamma/start", headers={"Authorization": f"Bearer {token}"})
    refused = r.json()
    assert r.status_code == 404 and refused["ok"] is False, refused
    assert refused["error"] == "unknown_instance" and "alpha" in refused["message"], refused

    for bad in ("..%2Fx", "..%2F..%2Fstate", "Bad_Name", "-x", "a%00b", "%2e%2e"):
        r = get(url, f"/v1/instances/{bad}", token)
        assert r.status_code in (400, 404), (bad, r.status_code, r.text)
        r = httpx.post(
            f"{url}/v1/instances/{bad}/start",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
            trust_env=False,
        )
        assert r.status_code in (400, 404), (bad, r.status_code, r.text)
    r = get(url, "/v1/instances/Bad_Name", token)
    assert r.status_code == 400
    assert "invalid instance name" in r.json()["detail"]

    names = [row["name"] for row in get(url, "/v1/instances", token).json()]
    assert names == ["alpha", "beta-2"]
    assert get(url, "/v1/instances/alpha/events", token).status_code == 200
    # the daemon survived all of it
    assert get(url, "/v1/daemon", token).status_code == 200


def test_status_exit_codes_and_stop(cli: Cli, home: Home) -> None:
    out = cli("daemon", "status")
    assert out.returncode == 1
    assert "not running" in out.stdout

    url, _token, pid = start_daemon(cli)
    out = cli("daemon", "status")
    assert out.returncode == 0, out.stderr
    assert f"pid {pid}" in out.stdout and url in out.stdout
    status = json.loads(cli("daemon", "status", "--json").stdout)
    assert status == {"running": True, "pid": pid, "url": url}

    out = cli("daemon", "stop")
    assert out.returncode == 0, out.stderr
    assert "daemon stopped" in out.stderr
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    out = cli("daemon", "status")
    assert out.returncode == 1
    assert out.stdout.strip() == "not running"
    assert not home.daemon_pid_path.exists()
    assert not home.daemon_endpoint_path.exists()
    out = cli("daemon", "stop")
    assert out.returncode == 0
    assert "not running" in out.stderr


def test_stale_pid_file_is_recognised_and_replaced(cli: Cli, home: Home) -> None:
    home.ensure()
    stale = dead_pid()
    home.daemon_pid_path.write_text(json.dumps({"pid": stale, "create_time": 1.0}))
    out = cli("daemon", "status")
    assert out.returncode == 1
    assert "not running (stale pid file)" in out.stdout

    url, token, pid = start_daemon(cli)
    assert pid != stale
    assert json.loads(home.daemon_pid_path.read_text())["pid"] == pid
    assert get(url, "/v1/daemon", token).json()["pid"] == pid
    assert cli("daemon", "status").returncode == 0


def test_pid_file_of_a_live_unrelated_process_is_stale(cli: Cli, home: Home) -> None:
    """A recorded PID now used by another process (PID reuse) is not the daemon."""
    home.ensure()
    me = psutil.Process()
    home.daemon_pid_path.write_text(
        json.dumps({"pid": me.pid, "create_time": me.create_time() - 1000.0})
    )
    out = cli("daemon", "status")
    assert out.returncode == 1
    assert "stale" in out.stdout
    out = cli("daemon", "stop")  # must not signal the unrelated process (this test!)
    assert out.returncode == 0
    assert me.is_running()


def test_second_daemon_run_refuses(cli: Cli, home: Home) -> None:
    url, token, pid = start_daemon(cli)
    out = cli("daemon", "run", timeout=30)
    assert out.returncode == 1
    assert "already running" in out.stderr
    assert json.loads(home.daemon_pid_path.read_text())["pid"] == pid
    assert json.loads(home.daemon_endpoint_path.read_text())["url"] == url
    r = wait_for(lambda: get(url, "/v1/daemon", token), 10, "the first daemon to answer")
    assert r.status_code == 200
    assert r.json()["pid"] == pid


def test_unparsable_pid_file_reads_as_stale(cli: Cli, home: Home) -> None:
    home.ensure()
    home.daemon_pid_path.write_text("{not json")
    out = cli("daemon", "status")
    assert out.returncode == 1
    assert "not running" in out.stdout
    _, _, pid = start_daemon(cli)
    assert json.loads(home.daemon_pid_path.read_text())["pid"] == pid


@pytest.mark.parametrize(
    "content",
    ['{"pid": null}', '{"pid": "abc", "create_time": 1}', '{"pid": 1, "create_time": "x"}'],
)
def test_corrupt_pid_file_reads_as_stale(cli: Cli, home: Home, content: str) -> None:
    home.ensure()
    home.daemon_pid_path.write_text(content)
    out = cli("daemon", "status")
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode == 1
    assert "not running" in out.stdout
    _, _, pid = start_daemon(cli)  # and it is replaced
    assert json.loads(home.daemon_pid_path.read_text())["pid"] == pid


def test_events_limit_over_the_bound_is_a_400_not_a_500(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    write_config(home, "alpha", tiny_model, free_port())
    url, token, _pid = start_daemon(cli)
    r = get(url, "/v1/instances/alpha/events?limit=100000", token)
    assert r.status_code == 400 and "limit" in r.json()["detail"], r.text
    assert get(url, "/v1/instances/alpha/events?limit=500", token).status_code == 200
