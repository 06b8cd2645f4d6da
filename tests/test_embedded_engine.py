"""The embedded engine: its ``-a`` gives the model its alias, whole (issue 10, item 11)."""

from __future__ import annotations

from pathlib import Path

import httpx
from conftest import Cli, free_port, write_config

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
