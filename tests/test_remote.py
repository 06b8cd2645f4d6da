"""Remote instances (issue 13): a server this machine does not run, health-checked and
routed to by the daemon and its gateway, never spawned or signalled.

The remote server is the embedded engine started by hand (as another machine would run
it), on a free port, so the daemon has no process of its own for it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import psutil
import pytest
from actor_fakes import harness
from conftest import Cli, free_port, write_config, write_instance
from helpers import events, gone, health, ps_row, wait_for

from llama_orchestrator.config.loader import load_instance
from llama_orchestrator.daemon.actor import messages as m
from llama_orchestrator.daemon.actor.handlers import InstanceActor
from llama_orchestrator.daemon.actor.watch import MIN_READY_DEADLINE_S
from llama_orchestrator.engine.states import State
from llama_orchestrator.home import Home
from llama_orchestrator.state.remote_view import remote_data, render_remote

KEY = "remote-secret-7f3a"  # what the remote server accepts
GATEWAY_KEY = "gateway-key-19c2"  # what clients of the gateway send


class HandServer:
    """The embedded engine started by hand, as on another machine."""

    def __init__(
        self, model: Path, port: int, api_key: str | None = None, binary: Path | None = None
    ) -> None:
        self.model, self.port, self.api_key, self.binary = model, port, api_key, binary
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> HandServer:
        engine = [sys.executable, "-m", "llama_orchestrator.engine.embedded"]
        argv = [str(self.binary)] if self.binary else engine
        argv += ["-m", str(self.model), "--port", str(self.port), "-c", "256", "-b", "64"]
        argv += ["-t", "1", "--metrics"]
        if self.api_key:
            argv += ["--api-key", self.api_key]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        wait_for(lambda: health(self.port) == 200, 60, "the hand-started server")
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)


@pytest.fixture
def servers() -> Iterator[list[HandServer]]:
    started: list[HandServer] = []
    yield started
    for s in started:
        s.kill()


def gateway(home: Home, **settings: Any) -> str:
    port = free_port()
    home.root.mkdir(parents=True, exist_ok=True)
    (home.root / "gateway.json").write_text(json.dumps({"port": port, **settings}))
    return f"http://127.0.0.1:{port}"


def remote_config(home: Home, name: str, url: str, **fields: Any) -> Path:
    cfg: dict[str, Any] = {
        "name": name,
        "remote": {"url": url},
        "healthcheck": {"interval": 0.5, "timeout": 2, "retries": 2, "start_period": 20},
    }
    return write_instance(home, name, cfg, **fields)


def pool(
    home: Home, model: Path, servers: list[HandServer], **settings: Any
) -> tuple[str, HandServer]:
    """A pool ``pool`` of a local instance ``near`` and a remote one ``far`` (a server
    started by hand); returns the gateway's URL and that server."""
    far = HandServer(model, free_port()).start()
    servers.append(far)
    url = gateway(home, **settings)
    write_config(home, "near", model, free_port(), gateway={"aliases": ["pool"]})
    remote_config(home, "far", f"http://127.0.0.1:{far.port}", gateway={"aliases": ["pool"]})
    return url, far


def client(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)


def complete(url: str, model: str, key: str = GATEWAY_KEY) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/completions",
        json={"model": model, "prompt": "hi", "max_tokens": 2},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
        trust_env=False,
    )


# --- config -----------------------------------------------------------------------------


def test_remote_configs_are_checked_with_clear_messages(cli: Cli, home: Home) -> None:
    path = remote_config(home, "far", "http://10.0.0.7:8080", model={"path": "x.gguf"}, gpu={})
    out = cli("config", "validate", "far")
    assert out.returncode != 0
    assert f"{path}: model: does not apply to a remote instance" in out.stderr, out.stderr
    assert f"{path}: gpu: does not apply to a remote instance" in out.stderr
    assert "remove 'remote' to run a server on this machine" in out.stderr
    assert "Traceback" not in out.stderr

    for url, why in (
        ("ftp://10.0.0.7", "must start with http:// or https://"),
        ("http://", "has no host"),
        ("http://10.0.0.7:99999", "has an invalid port"),
        ("http://10.0.0.7:8080/v1", "must be the server's root"),
        ("http://user:pw@10.0.0.7", "must not hold credentials"),
    ):
        remote_config(home, "far", url)
        out = cli("config", "validate", "far")
        assert out.returncode != 0, url
        assert f"{path}: remote.url: {why}" in out.stderr and repr(url) in out.stderr, out.stderr

    remote_config(home, "far", "https://far.example", remote={"api_key_env": "NOT A NAME"})
    out = cli("config", "validate", "far")
    assert out.returncode != 0 and f"{path}: remote.api_key_env:" in out.stderr, out.stderr

    # a local instance still needs its model
    path.write_text(json.dumps({"name": "far"}))
    out = cli("config", "validate", "far")
    assert out.returncode != 0 and f"{path}: model: required field is missing" in out.stderr

    remote_config(home, "far", "https://far.example", remote={"api_key_env": "FAR_KEY"})
    out = cli("config", "validate", "far")
    assert out.returncode == 0, out.stderr
    rows = json.loads(cli("config", "lint", "far", "--format", "json").stdout)
    rows = rows.get("results", rows) if isinstance(rows, dict) else rows
    checks = {r["check"]: r for r in rows if r["instance"] == "far"}
    assert {"remote", "api-key"} <= set(checks), rows
    assert "model" not in checks and "port-free" not in checks  # nothing local to check


def test_the_json_schema_takes_a_local_or_a_remote_instance() -> None:
    import jsonschema

    from llama_orchestrator.config.schema import json_schema

    schema = json_schema()
    ok = jsonschema.Draft202012Validator(schema)
    remote = {"name": "far", "remote": {"url": "http://10.0.0.7:8080", "api_key_env": "K"}}
    assert ok.is_valid(remote)
    assert ok.is_valid({"name": "near", "model": {"path": "m.gguf"}})
    assert not ok.is_valid({**remote, "model": {"path": "m.gguf"}})
    assert not ok.is_valid({**remote, "server": {"port": 8001}})
    assert not ok.is_valid({"name": "nothing"})


def test_a_missing_key_variable_refuses_the_start(cli: Cli, home: Home) -> None:
    gateway(home)
    path = remote_config(home, "far", "http://127.0.0.1:9", remote={"api_key_env": "FAR_KEY"})
    cli.env.pop("FAR_KEY", None)
    out = cli("up", "far")
    assert out.returncode != 0
    assert f"{path}: remote.api_key_env: the environment variable FAR_KEY is not set" in (
        out.stderr
    ), out.stderr
    refused = [e for e in events(home, "far") if e["kind"] == "start_refused"]
    assert refused and "FAR_KEY" in refused[-1]["reason"]
    assert ps_row(cli, "far")["status"] == "stopped"


def test_a_remote_server_that_never_answers_fails_its_start_saying_why(home: Home) -> None:
    """The start fails as a local one's does, after the least wait for readiness (5 s)
    even with ``start_period: 0``. On the fake clock: the daemon's actor, its probes
    answered by a mock transport where nothing listens (tests/actor_fakes.py)."""
    remote_config(home, "far", f"http://127.0.0.1:{free_port()}", healthcheck={"start_period": 0})

    async def main() -> None:
        h = await harness(home)
        actor = InstanceActor("far", h.ctx, None)
        actor.start_loop()
        try:
            started = asyncio.ensure_future(actor.request(lambda r: m.Start(r, wait_ready=True)))
            await h.clock.advance(MIN_READY_DEADLINE_S - 0.1)
            assert not started.done()  # still within the least wait
            while not started.done() and h.clock.monotonic() < 1000 + 60:
                await h.clock.advance(0.25)
            outcome = started.result()
            assert not outcome.ok and "not ready after 5s" in outcome.message, outcome
            assert "connection failed" in outcome.message
            assert h.states("far")[-1] == State.FATAL.value and h.launcher.spawned == []
        finally:
            actor.cancel_tasks()
            await h.ctx.scheduler.close()
            await h.ctx.http.aclose()
            h.store.close()

    asyncio.run(asyncio.wait_for(main(), 30))


# --- the daemon and the gateway ---------------------------------------------------------


@pytest.mark.parametrize("engine", ["embedded", "llama-server"])
def test_a_remote_instance_behind_the_gateway(
    cli: Cli,
    home: Home,
    tiny_model: Path,
    servers: list[HandServer],
    engine: str,
    request: pytest.FixtureRequest,
) -> None:
    binary = request.getfixturevalue("llama_server_bin") if engine == "llama-server" else None
    far = HandServer(tiny_model, free_port(), api_key=KEY, binary=binary).start()
    servers.append(far)
    url = gateway(home, api_keys=[GATEWAY_KEY])
    remote_config(
        home,
        "far",
        f"http://127.0.0.1:{far.port}",
        remote={"api_key_env": "FAR_KEY", "parallel": 2},
        gateway={"aliases": ["far-model"], "on_demand": False},
    )
    cli.env["FAR_KEY"] = KEY  # the daemon's environment holds the key
    out = cli("up", "far")
    assert out.returncode == 0, out.stderr

    row = ps_row(cli, "far")
    assert row["status"] == "running" and row["health"] == "healthy", row
    assert row["pid"] is None and row["model"] == f"127.0.0.1:{far.port}", row
    assert row["backend"] == "remote"
    table = cli("ps").stdout
    assert f"127.0.0.1:{far.port}" in table

    # without the key the server refuses: the gateway sends it, not the client's own
    direct = f"http://127.0.0.1:{far.port}/v1/completions"
    assert httpx.post(direct, json={"prompt": "x", "max_tokens": 1}).status_code == 401
    c = client(url, GATEWAY_KEY)
    assert {m.id for m in c.models.list().data} == {"far", "far-model"}
    done = c.completions.create(model="far-model", prompt="hello", max_tokens=3)
    assert done.choices[0].text is not None and done.usage is not None
    chat = c.chat.completions.create(
        model="far", messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    assert chat.choices[0].message.content is not None
    streamed = list(c.completions.create(model="far", prompt="hi", max_tokens=3, stream=True))
    assert streamed
    assert complete(url, "far").headers["x-llama-orch-instance"] == "far"
    # its own llama.cpp metrics, scraped with its key, under the gateway's /metrics
    exposition = httpx.get(
        f"{url}/metrics", headers={"Authorization": f"Bearer {GATEWAY_KEY}"}, trust_env=False
    ).text
    assert 'llamacpp:requests_processing{instance="far"}' in exposition, exposition[-2000:]

    described = cli.json("describe", "far", "--json")
    assert described["config"]["remote"]["url"] == f"http://127.0.0.1:{far.port}"
    assert described["config"]["remote"]["api_key_env"] == "FAR_KEY"
    for text in (
        json.dumps(described),
        cli("ps", "--json").stdout,
        json.dumps(events(home, "far")),
    ):
        assert KEY not in text  # the key itself is never shown or recorded
    assert "FAR_KEY" not in os.environ  # so "set" below is read from the daemon's environment
    shown = remote_data(home, load_instance(home, "far"))
    assert shown is not None and shown["api_key_set"] is True, shown
    assert shown["api_key_source"] == "daemon" and KEY not in json.dumps(shown)
    text = "\n".join(render_remote(shown))
    assert f"http://127.0.0.1:{far.port}" in text and "FAR_KEY (set in the daemon's" in text
    assert described["remote"] == shown and described["model_file"] is None
    human = cli("describe", "far").stdout  # the same lines, and nothing of a local server
    assert "FAR_KEY (set in the daemon's environment)" in human, human
    assert "would run" not in human and "Binary:" not in human and KEY not in human

    # down: out of the routes, and the server is left alone
    assert cli("down", "far").returncode == 0
    assert ps_row(cli, "far")["status"] == "stopped"
    assert not gone(far.pid) and health(far.port) == 200
    r = complete(url, "far")
    assert r.status_code == 503 and "on_demand is off" in r.text, r.text

    # up puts it back; restart is down + up, and neither signals the server
    assert cli("up", "far").returncode == 0
    assert complete(url, "far").status_code == 200
    assert cli("restart", "far").returncode == 0
    assert ps_row(cli, "far")["status"] == "running"
    assert complete(url, "far").status_code == 200
    assert psutil.Process(far.pid).is_running() and not gone(far.pid)
    assert not [e for e in events(home, "far") if e["kind"] == "exit"]


def test_a_pool_fails_over_from_a_dead_remote_to_the_local_replica(
    cli: Cli, home: Home, tiny_model: Path, servers: list[HandServer]
) -> None:
    # a budget of one running server: the remote one uses none of this machine
    url, far = pool(home, tiny_model, servers, max_running=1)
    port = far.port
    assert cli("up", "near").returncode == 0
    assert cli("up", "far").returncode == 0
    assert ps_row(cli, "near")["status"] == "running"  # not evicted for the remote one
    # the daemon's own count (the web page's Devices screen): the remote one holds nothing
    endpoint = json.loads(home.daemon_endpoint_path.read_text())
    token = home.token_path.read_text().strip()
    devices = httpx.get(
        f"{endpoint['url']}/v1/devices", headers={"Authorization": f"Bearer {token}"}
    ).json()
    assert (devices["running"], devices["max_running"]) == (1, 1), devices
    served = {complete(url, "pool", "none").headers["x-llama-orch-instance"] for _ in range(6)}
    assert served == {"near", "far"}  # least busy, ties rotate: both take requests

    far.kill()  # the remote machine goes away
    wait_for(lambda: ps_row(cli, "far")["health"] == "unhealthy", 30, "far unhealthy")
    for _ in range(6):
        r = complete(url, "pool", "none")
        assert r.status_code == 200 and r.headers["x-llama-orch-instance"] == "near", r.text
    # still running (not ours to restart), after more failed checks than retries
    wait_for(lambda: len([e for e in health_checks(cli, "far") if not e["ok"]]) >= 3, 30)
    row = ps_row(cli, "far")
    assert row["status"] == "running" and row["health"] == "unhealthy", row
    spawned = [e for e in events(home, "far") if e["kind"] == "spawned"]
    assert len(spawned) == 1 and spawned[0]["new"] is None  # no PID: nothing spawned

    far = HandServer(tiny_model, port).start()  # it comes back
    servers.append(far)
    wait_for(lambda: ps_row(cli, "far")["health"] == "healthy", 30, "far healthy again")
    assert complete(url, "far", "none").status_code == 200


def test_a_daemon_restart_checks_a_remote_instance_again(
    cli: Cli, home: Home, tiny_model: Path, servers: list[HandServer]
) -> None:
    far = HandServer(tiny_model, free_port()).start()
    servers.append(far)
    gateway_url = gateway(home)
    remote_config(home, "far", f"http://127.0.0.1:{far.port}")
    out = cli("up", "far")
    assert out.returncode == 0 and "(remote, " in out.stderr, out.stderr
    assert cli("daemon", "stop").returncode == 0
    assert not gone(far.pid) and health(far.port) == 200  # the daemon's end signals nothing
    assert cli("daemon", "start").returncode == 0
    wait_for(lambda: ps_row(cli, "far")["health"] == "healthy", 30, "far healthy again")
    assert ps_row(cli, "far")["status"] == "running"
    kinds = [e["kind"] for e in events(home, "far")]
    assert "exit" not in kinds and "adopted" not in kinds, kinds  # nothing ended or adopted
    assert kinds.count("spawned") == 2  # two runs of the remote, both without a process

    # on demand (its default): a request puts a remote instance that is down back into
    # the routes once its health answers; nothing is started anywhere
    assert cli("down", "far").returncode == 0
    r = complete(gateway_url, "far", "none")
    assert r.status_code == 200 and r.headers["x-llama-orch-instance"] == "far", r.text
    assert ps_row(cli, "far")["status"] == "running" and not gone(far.pid)


def health_checks(cli: Cli, name: str) -> list[dict[str, Any]]:
    out = cli("health", name, "--json")
    data = json.loads(out.stdout) if out.returncode == 0 else {}
    found = data.get(name, data) if isinstance(data, dict) else data
    checks = found.get("checks", []) if isinstance(found, dict) else []
    return checks if isinstance(checks, list) else []


def test_upstream_addresses_take_http_and_https() -> None:
    from llama_orchestrator.gateway.upstream import Target

    plain = Target("http://10.0.0.7:8080", 1.0)
    assert plain.tls is None and (plain.host, plain.port) == ("10.0.0.7", 8080)
    tls = Target("https://far.example:443", 1.0)
    assert tls.tls is not None and tls.tls.check_hostname  # verified, as a browser would
    assert (tls.host, tls.port, tls.host_header) == ("far.example", 443, b"far.example:443")
    with pytest.raises(ValueError, match="unsupported instance address"):
        Target("ftp://far.example", 1.0)


def test_a_remote_address_always_spells_its_port() -> None:
    from llama_orchestrator.config.schema import RemoteConfig

    assert RemoteConfig(url="https://far.example/").base_url == "https://far.example:443"
    assert RemoteConfig(url="http://far.example").base_url == "http://far.example:80"
    assert RemoteConfig(url="http://[::1]:8080").base_url == "http://[::1]:8080"


def test_a_pool_starts_its_stopped_local_replica_when_the_remote_is_down(
    cli: Cli, home: Home, tiny_model: Path, servers: list[HandServer]
) -> None:
    url, far = pool(home, tiny_model, servers, load_timeout=60)
    assert cli("up", "far").returncode == 0
    assert ps_row(cli, "near")["status"] == "stopped"
    far.kill()
    wait_for(lambda: ps_row(cli, "far")["health"] == "unhealthy", 30, "far unhealthy")
    # the remote one runs but fails its checks: the stopped local replica is started on
    # demand, instead of the request waiting for the remote machine until load_timeout
    r = complete(url, "pool", "none")
    assert r.status_code == 200 and r.headers["x-llama-orch-instance"] == "near", r.text
    assert ps_row(cli, "near")["status"] == "running"


def test_ps_and_fit_of_a_remote_instance_that_never_started(cli: Cli, home: Home) -> None:
    remote_config(home, "far", "http://10.0.0.7:8080")
    row = ps_row(cli, "far")
    assert row["backend"] == "remote" and row["port"] == 8080 and row["pid"] is None, row
    out = cli("fit", "far")
    assert out.returncode == 1 and "remote instance" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_create_writes_a_remote_instance(cli: Cli, home: Home) -> None:
    out = cli("create", "far", "--remote", " http://10.0.0.7:8080/", "--api-key-env", "FAR_KEY")
    assert out.returncode == 0, out.stderr
    assert "(remote http://10.0.0.7:8080)" in out.stderr, out.stderr
    data = json.loads(home.config_path("far").read_text())
    assert data == {
        "name": "far",
        "remote": {"url": "http://10.0.0.7:8080", "api_key_env": "FAR_KEY"},
    }
    assert load_instance(home, "far").remote is not None
    bad = cli("create", "near", "--remote", "ftp://10.0.0.7")
    assert bad.returncode == 2 and "remote.url" in bad.stderr, bad.stderr
    both = cli("create", "near", "--remote", "http://10.0.0.7:8080", "--model", "x.gguf")
    assert both.returncode == 2 and "--model does not apply with --remote" in both.stderr
    zero = cli("create", "near", "--remote", "http://10.0.0.7:0")
    assert zero.returncode == 2 and "1 to 65535" in zero.stderr, zero.stderr
    named = cli("create", "near", "--remote", "http://h:1", "--api-key-env", "1-bad")
    assert named.returncode == 2 and "e.g. FAR_KEY" in named.stderr, named.stderr
    alone = cli("create", "near", "--api-key-env", "K")
    assert alone.returncode == 2 and "goes with --remote" in alone.stderr, alone.stderr
    neither = cli("create", "near")
    assert neither.returncode == 2 and "--model FILE" in neither.stderr, neither.stderr
    assert not home.config_path("near").exists()


def test_the_log_of_a_remote_instance_is_on_its_own_machine(cli: Cli, home: Home) -> None:
    remote_config(home, "far", "http://10.0.0.7:8080")
    assert cli("daemon", "start").returncode == 0
    out = cli("events", "--logs", "far")
    assert out.returncode == 1 and "remote instance" in out.stderr, out.stderr
    assert "machine that runs it" in out.stderr and "Traceback" not in out.stderr
    logs = cli("logs", "far")
    assert logs.returncode == 1 and "remote instance" in logs.stderr, logs.stderr
    # among local instances it is a note, and the others' logs are shown
    write_config(home, "near", Path("model.gguf"), free_port())
    both = cli("logs", "far", "near")
    assert both.returncode == 0 and "note: 'far' is a remote instance" in both.stderr, both
    assert "near has not been started yet" in both.stderr, both.stderr


def test_a_remote_instance_pointing_at_its_own_gateway_is_a_loop_said_at_once(
    cli: Cli, home: Home
) -> None:
    url = gateway(home)
    remote_config(home, "loop", url)  # the gateway's own address
    up = cli("up", "loop")  # its health checks come back to the gateway that sent them
    assert up.returncode == 1 and "this daemon's own gateway" in up.stderr, up.stderr
    assert "point remote.url at the server itself" in up.stderr
    assert ps_row(cli, "loop")["status"] == "fatal"
