"""Hot reload, drift and removal (issue 11): the daemon watches ``instances/`` and
``gateway.json``; a new folder routes without a restart, a broken file keeps the last
good version in force, a changed config is flagged until ``up`` recreates it, a folder
deleted by hand stops its server, and nothing unchanged is ever restarted."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Cli, free_port, write_config
from helpers import events, fake_binary, gone, ps_row, wait_for

from llama_orchestrator.config.loader import load_file
from llama_orchestrator.daemon.gateway_reload import settle
from llama_orchestrator.gateway.settings import GatewaySettings
from llama_orchestrator.home import Home
from llama_orchestrator.state.drift import UNSET, config_diff, config_hash


def gateway(home: Home, **settings: Any) -> str:
    port = free_port()
    write_gateway(home, port=port, **settings)
    return f"http://127.0.0.1:{port}"


def write_gateway(home: Home, **settings: Any) -> None:
    home.root.mkdir(parents=True, exist_ok=True)
    (home.root / "gateway.json").write_text(json.dumps(settings))


def complete(url: str, model: str, key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"model": model, "prompt": "hi", "max_tokens": 1}
    return httpx.post(f"{url}/v1/completions", json=body, headers=headers, timeout=60)


def config_events(home: Home, name: str) -> list[str]:
    return [str(e["reason"]) for e in events(home, name) if e["kind"] == "config"]


def said(home: Home, name: str, text: str) -> bool:
    return any(text in reason for reason in config_events(home, name))


# -- the pure parts ------------------------------------------------------------------------


def test_config_hash_is_the_loaders_raw_hash(tmp_path: Path, tiny_model: Path) -> None:
    """ps compares hashes without the loader: the two must agree, CRLF files included."""
    home = Home(tmp_path)
    path = write_config(home, "alpha", tiny_model, 8001)
    assert config_hash(path) == load_file(path).raw_hash
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    assert config_hash(path) == load_file(path).raw_hash
    assert config_hash(tmp_path / "missing.json") is None


def test_config_diff_lists_changed_fields_by_path() -> None:
    was = {"model": {"context_size": 256, "path": "m"}, "gateway": {"aliases": ["a"]}}
    now = {"model": {"context_size": 512, "path": "m"}, "gateway": {"aliases": ["a", "b"]}}
    now["autostart"] = True  # type: ignore[assignment]
    assert config_diff(was, now) == [
        {"field": "autostart", "was": UNSET, "now": True},
        {"field": "gateway.aliases", "was": ["a"], "now": ["a", "b"]},
        {"field": "model.context_size", "was": 256, "now": 512},
    ]
    assert config_diff(was, was) == []


def test_gateway_settings_that_wait_for_a_daemon_start() -> None:
    running = GatewaySettings(host="127.0.0.1", port=8080, api_keys=("sk-old-123456",))
    new = GatewaySettings(host="127.0.0.1", port=9090, api_keys=(), queue_max_per_model=3)
    kept, notes = settle(running, new)
    assert kept is not None and kept.port == 8080 and kept.queue_max_per_model == 3
    assert kept.api_keys == () and "next daemon start" in notes[0]
    exposed = GatewaySettings(host="0.0.0.0", api_keys=("sk-old-123456",))
    kept, notes = settle(exposed, GatewaySettings(host="0.0.0.0"))
    assert kept is None and "refusing to drop every API key" in notes[0]


# -- real servers --------------------------------------------------------------------------


def test_hot_add_routes_a_new_folder_without_restarting_others(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    url = gateway(home)
    write_config(home, "alpha", tiny_model, free_port())
    assert cli("up", "alpha").returncode == 0
    pid = ps_row(cli, "alpha")["pid"]
    write_config(home, "beta", tiny_model, free_port(), gateway={"aliases": ["b-model"]})

    def listed() -> bool:
        models = httpx.get(f"{url}/v1/models", timeout=10).json()["data"]
        return "b-model" in {m["id"] for m in models}

    wait_for(listed, what="the new instance routable")
    assert complete(url, "b-model").status_code == 200  # started on demand
    assert ps_row(cli, "beta")["status"] == "running"
    wait_for(lambda: said(home, "beta", "added"), what="the new folder noticed")
    assert ps_row(cli, "alpha")["pid"] == pid  # the others were not restarted


def test_drift_is_flagged_and_up_recreates(cli: Cli, home: Home, tiny_model: Path) -> None:
    write_gateway(home, enabled=False)
    cfg = write_config(home, "alpha", tiny_model, free_port())
    assert cli("up", "alpha").returncode == 0
    row = ps_row(cli, "alpha")
    pid = row["pid"]
    assert row["config_changed"] is False
    cfg.write_text(cfg.read_text().replace('"context_size": 256', '"context_size": 512'))
    row = ps_row(cli, "alpha")
    assert row["config_changed"] is True and row["pid"] == pid
    table = cli("ps").stdout
    assert "running (config changed)" in table
    data = cli.json("describe", "alpha", "--json")
    assert data["config_changed"] is True
    assert {"field": "model.context_size", "was": 256, "now": 512} in data["config_diff"]
    assert "model.context_size: 256 -> 512" in cli("describe", "alpha").stdout
    # the daemon notices, and leaves it running as it is
    wait_for(lambda: said(home, "alpha", "keeps running"), what="the change noticed")
    assert ps_row(cli, "alpha")["pid"] == pid

    out = cli("up", "--no-recreate", "alpha")
    assert out.returncode == 0, out.stderr
    assert ps_row(cli, "alpha")["pid"] == pid
    out = cli("up", "alpha")
    assert out.returncode == 0, out.stderr
    assert "recreated" in out.stderr
    row = ps_row(cli, "alpha")
    assert row["pid"] != pid and row["status"] == "running" and row["config_changed"] is False
    assert gone(pid)
    assert cli.json("describe", "alpha", "--json")["config_diff"] == []
    out = cli("up", "alpha")  # unchanged now: nothing to recreate
    assert out.returncode == 0 and "recreated" not in out.stderr
    assert ps_row(cli, "alpha")["pid"] == row["pid"]


def test_a_folder_deleted_by_hand_stops_its_server(cli: Cli, home: Home, tiny_model: Path) -> None:
    write_gateway(home, enabled=False)
    write_config(home, "alpha", tiny_model, free_port())
    write_config(home, "beta", tiny_model, free_port())
    assert cli("up", "alpha", "beta").returncode == 0
    pid, beta = ps_row(cli, "alpha")["pid"], ps_row(cli, "beta")["pid"]
    shutil.rmtree(home.instance_dir("alpha"))
    wait_for(lambda: gone(pid), what="the removed instance's server stopped")
    row = wait_for(
        lambda: (r := ps_row(cli, "alpha"))["status"] == "stopped" and r, what="its record"
    )
    assert row["config_removed"] is True and row["pid"] is None
    assert "stopped (config removed)" in cli("ps", "-a").stdout
    assert said(home, "alpha", "was removed")
    assert ps_row(cli, "beta")["pid"] == beta
    out = cli("rm", "alpha")
    assert out.returncode == 0, out.stderr
    assert all(r["name"] != "alpha" for r in cli.json("ps", "-a", "--json"))


def test_a_broken_file_keeps_the_last_good_version(cli: Cli, home: Home, tiny_model: Path) -> None:
    url = gateway(home)
    cfg = write_config(home, "alpha", tiny_model, free_port(), gateway={"aliases": ["tiny-a"]})
    assert cli("up", "alpha").returncode == 0
    pid = ps_row(cli, "alpha")["pid"]
    good = cfg.read_text()
    cfg.write_text(good.replace('"context_size": 256', '"context_size": "big"'))
    wait_for(lambda: said(home, "alpha", "invalid config"), what="the broken file reported")
    reason = next(r for r in config_events(home, "alpha") if "invalid config" in r)
    assert str(cfg) in reason and "model.context_size" in reason and "last good" in reason
    out = cli("ps", "--json")
    row = next(r for r in json.loads(out.stdout) if r["name"] == "alpha")
    assert "model.context_size" in row["config_error"] and row["pid"] == pid
    assert "invalid config" in out.stderr
    out = cli("config", "validate", "alpha")
    assert out.returncode == 1 and "model.context_size" in out.stdout + out.stderr
    assert complete(url, "tiny-a").status_code == 200  # its alias still routes
    assert ps_row(cli, "alpha")["pid"] == pid

    cfg.write_text(good)
    wait_for(lambda: said(home, "alpha", "valid again"), what="the fix noticed")
    row = ps_row(cli, "alpha")
    assert row["pid"] == pid and row["config_changed"] is False and row["config_error"] is None


def test_gateway_keys_apply_at_once(cli: Cli, home: Home, tiny_model: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    write_gateway(home, port=port, api_keys=["sk-old-123456"])
    write_config(home, "alpha", tiny_model, free_port())
    assert cli("up", "alpha").returncode == 0
    assert complete(url, "alpha", "sk-old-123456").status_code == 200
    write_gateway(home, port=port, api_keys=["sk-new-123456"])
    wait_for(
        lambda: complete(url, "alpha", "sk-old-123456").status_code == 401,
        what="the old key refused",
    )
    assert complete(url, "alpha", "sk-new-123456").status_code == 200
    assert said(home, "", "gateway.json applied")
    # a broken gateway.json keeps the settings in force
    (home.root / "gateway.json").write_text('{"port": "x"')
    out = cli("daemon", "reload", "--json")
    assert out.returncode == 1, out.stderr  # bad input: non-zero, nothing changed
    assert json.loads(out.stdout)["gateway"] == "invalid"
    assert complete(url, "alpha", "sk-new-123456").status_code == 200


@pytest.mark.parametrize("how", ["command", "sighup"])
def test_daemon_reload_rescans_at_once(cli: Cli, home: Home, tiny_model: Path, how: str) -> None:
    import os
    import signal

    write_gateway(home, enabled=False)
    write_config(home, "alpha", tiny_model, free_port())
    assert cli("daemon", "start").returncode == 0
    write_config(home, "beta", tiny_model, free_port())
    bad = write_config(home, "gamma", tiny_model, free_port())
    bad.write_text('{"name": "gamma"}')
    if how == "sighup":
        pid = json.loads(home.daemon_pid_path.read_text())["pid"]
        os.kill(pid, signal.SIGHUP)
        wait_for(lambda: said(home, "", "configs reloaded"), what="the reload event")
        assert said(home, "gamma", "invalid config")
        return
    out = cli("daemon", "reload", "--json")
    assert out.returncode == 1  # a config is invalid
    report = json.loads(out.stdout)
    assert report["instances"] == 3 and "model" in report["invalid"]["gamma"]
    # done when the command returns (whether this rescan or the poll saw them first)
    assert said(home, "beta", "added") and said(home, "gamma", "invalid config")
    out = cli("daemon", "reload")
    assert out.returncode == 1 and "invalid: gamma" in out.stderr


def test_rm_then_a_new_folder_of_that_name_routes_again(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    url = gateway(home)
    write_config(home, "alpha", tiny_model, free_port())
    assert cli("daemon", "start").returncode == 0
    assert complete(url, "alpha").status_code == 200  # on demand: the gateway knows it
    out = cli("rm", "--force", "alpha")
    assert out.returncode == 0, out.stderr
    assert complete(url, "alpha").status_code == 404
    write_config(home, "alpha", tiny_model, free_port())
    assert complete(url, "alpha").status_code == 200  # a new actor, not the removed one
    assert not said(home, "alpha", "was removed")  # `rm`, not a removal by hand


def test_a_same_size_edit_within_one_mtime_tick_routes_the_new_alias(
    cli: Cli, home: Home, tiny_model: Path, tmp_path: Path
) -> None:
    """The daemon reads configs by content, not by (mtime, size) (issue 17): an alias
    changed to one of the same length, twice, with the file's mtime put back each time
    (as two writes within one tick of the file system's clock leave it), routes by the
    new name, and the old one no longer does."""
    url = gateway(home)
    binary = str(fake_binary(tmp_path))
    aliases = {"aliases": ["aaaa"]}
    cfg = write_config(home, "alpha", tiny_model, free_port(), binary=binary, gateway=aliases)
    assert cli("daemon", "start").returncode == 0
    assert complete(url, "aaaa").status_code == 200  # the gateway read it: started on demand
    first = cfg.stat()

    def models() -> set[str]:
        return {m["id"] for m in httpx.get(f"{url}/v1/models", timeout=10).json()["data"]}

    for old, new in (("aaaa", "bbbb"), ("bbbb", "cccc")):
        cfg.write_text(cfg.read_text().replace(f'"{old}"', f'"{new}"'))
        os.utime(cfg, ns=(first.st_atime_ns, first.st_mtime_ns))
        now = cfg.stat()
        assert (now.st_size, now.st_mtime_ns) == (first.st_size, first.st_mtime_ns)
        wait_for(lambda new=new: new in models(), what=f"the alias {new!r} routed")
        assert old not in models()
        assert complete(url, new).status_code == 200
        assert complete(url, old).status_code == 404
