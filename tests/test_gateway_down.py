"""`down` sticks while requests wait for the instance (issue 19, item 4): the requests
queued behind a stream get 503 naming the `down`, and nothing starts the server again."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx
from conftest import Cli, free_port, write_config
from helpers import LETTERS, events, ps_row, wait_for

from llama_orchestrator.home import Home


def test_down_with_requests_queued_is_not_undone(cli: Cli, home: Home, tiny_model: Path) -> None:
    port = free_port()
    path = write_config(home, "alpha", tiny_model, free_port())  # parallel 1
    (home.root / "gateway.json").write_text(json.dumps({"port": port}))
    cfg = json.loads(path.read_text())
    cfg["model"]["context_size"] = 32768  # room for a stream that outlasts the test
    path.write_text(json.dumps(cfg))
    assert cli("up", "alpha").returncode == 0
    url = f"http://127.0.0.1:{port}/v1/completions"
    control = json.loads(home.daemon_endpoint_path.read_text())["url"]
    token = home.token_path.read_text().strip()

    def queued() -> int:
        r = httpx.get(
            f"{control}/v1/gateway", headers={"Authorization": f"Bearer {token}"}, trust_env=False
        )
        return sum(r.json().get("queued", {}).values())

    streaming = threading.Event()

    def stream() -> None:
        body = {"model": "alpha", "prompt": "a", "max_tokens": 30000, "stream": True, **LETTERS}
        try:
            with httpx.stream("POST", url, json=body, timeout=60, trust_env=False) as r:
                for _ in r.iter_bytes():
                    streaming.set()
        except httpx.HTTPError:
            pass  # cut by the down

    answers: list[httpx.Response] = []

    def waiting() -> None:
        body: dict[str, Any] = {"model": "alpha", "prompt": "b", "max_tokens": 2}
        answers.append(httpx.post(url, json=body, timeout=60, trust_env=False))

    threads = [threading.Thread(target=stream, daemon=True)]
    threads[0].start()
    assert streaming.wait(30)
    threads.append(threading.Thread(target=waiting, daemon=True))
    threads[1].start()
    wait_for(lambda: queued() == 1, what="a request queued behind the stream")

    assert cli("down", "alpha").returncode == 0
    threads[1].join(60)
    assert answers and answers[0].status_code == 503, answers[0].text if answers else None
    assert "down" in answers[0].json()["error"]["message"]
    assert ps_row(cli, "alpha")["status"] == "stopped"
    states = [e["new"] for e in events(home, "alpha") if e["kind"] == "state"]
    assert states[-1] == "stopped" and states[-2] == "stopping"  # no start after the down
