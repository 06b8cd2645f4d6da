"""The embedded engine: its ``-a`` gives the model its alias, whole (issue 10, item 11);
a stop during a stream ends it at once (issue 19, item 11)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
from conftest import Cli, free_port, write_config
from helpers import LETTERS, events

from llama_orchestrator.engine import embedded
from llama_orchestrator.home import Home


def test_embedded_alias_is_one_name_not_its_letters() -> None:
    args = embedded.build_parser().parse_args(["-m", "m.gguf", "-a", "my-model"])
    assert set(embedded.build_params(args).model_alias) == {"my-model"}
    args = embedded.build_parser().parse_args(["-m", "m.gguf", "-a", "one,two"])
    assert set(embedded.build_params(args).model_alias) == {"one", "two"}
    args = embedded.build_parser().parse_args(["-m", "m.gguf"])
    assert not embedded.build_params(args).model_alias


def test_embedded_alias_is_served(cli: Cli, home: Home, tiny_model: Path) -> None:
    port = free_port()
    write_config(home, "alpha", tiny_model, port, args=["-a", "my-model"])
    out = cli("up", "alpha", timeout=90)
    assert out.returncode == 0, out.stderr
    r = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10, trust_env=False)
    assert r.status_code == 200, r.text
    ids = [m["id"] for m in r.json()["data"]]
    assert ids == ["my-model"], ids


def test_down_during_a_stream_ends_the_embedded_engine_at_once(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    """Issue 19, item 11: the engine's release waited for the stream to end, so `down`
    waited the whole stop_timeout and ended in SIGKILL."""
    port = free_port()
    path = write_config(home, "alpha", tiny_model, port, server={"stop_timeout": 20})
    cfg = json.loads(path.read_text())
    cfg["model"]["context_size"] = 2048  # the tiny model's longest: a stream of seconds
    path.write_text(json.dumps(cfg))
    assert cli("up", "alpha").returncode == 0
    streaming = threading.Event()

    def stream() -> None:
        body = {"prompt": "a", "max_tokens": 2000, "stream": True, **LETTERS}
        url = f"http://127.0.0.1:{port}/v1/completions"
        try:
            with httpx.stream("POST", url, json=body, timeout=60, trust_env=False) as r:
                for _ in r.iter_bytes():
                    streaming.set()
        except httpx.HTTPError:
            pass  # cut by the down

    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    assert streaming.wait(30)
    assert cli("down", "alpha").returncode == 0
    stops = [e["reason"] for e in events(home, "alpha") if e["new"] == "stopped"]
    assert stops[-1] == "stopped (exited with code 0)", stops
    thread.join(30)
