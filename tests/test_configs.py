"""The daemon's one reader of instance configs (daemon/configs.py, issue 17), in-process:
content, not mtime, decides; the last good version stays in force; each change is a
``config`` event carrying the parsed config; removal waits out an editor's
move-then-write. The daemon's use of it is tested in test_hot_reload.py."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest
from conftest import free_port, write_config

from llama_orchestrator.config.loader import ConfigError, LoadedConfig
from llama_orchestrator.daemon import configs as configs_module
from llama_orchestrator.daemon.actor.snapshot import InstanceSnapshot
from llama_orchestrator.daemon.configs import Configs
from llama_orchestrator.daemon.events import Event, EventBus, EventKind
from llama_orchestrator.engine.states import Desired, State
from llama_orchestrator.home import Home


def watched(home: Home) -> tuple[Configs, list[Event]]:
    bus = EventBus()
    seen: list[Event] = []
    bus.add_sink(seen.append)
    return Configs(home, bus), seen


def aliases(loaded: LoadedConfig | None) -> list[str]:
    assert loaded is not None
    return list(loaded.config.gateway.aliases)


def test_a_same_size_edit_within_one_mtime_tick_is_seen(home: Home, tiny_model: Path) -> None:
    cfg = write_config(home, "alpha", tiny_model, free_port(), gateway={"aliases": ["aaaa"]})
    configs, seen = watched(home)
    configs.prime()
    first = cfg.stat()
    for new in ("bbbb", "cccc"):
        cfg.write_text(cfg.read_text().replace(aliases(configs.valid("alpha"))[0], new))
        os.utime(cfg, ns=(first.st_atime_ns, first.st_mtime_ns))
        assert (cfg.stat().st_size, cfg.stat().st_mtime_ns) == (first.st_size, first.st_mtime_ns)
        found = asyncio.run(configs.rescan())
        assert found.changed == ["alpha"] and aliases(configs.last_good("alpha")) == [new]
        event = seen[-1]  # the change, carrying what was parsed
        assert event.kind is EventKind.CONFIG and event.instance == "alpha"
        assert event.config is configs.current("alpha") and aliases(event.config) == [new]
        assert "config" not in event.to_dict()  # the daemon's, not the stream's
    assert asyncio.run(configs.rescan()).changed == []  # unchanged: nothing said


def test_a_broken_file_keeps_the_last_good_version(home: Home, tiny_model: Path) -> None:
    cfg = write_config(home, "alpha", tiny_model, free_port(), gateway={"aliases": ["tiny"]})
    configs, seen = watched(home)
    configs.prime()
    good = cfg.read_text()
    cfg.write_text(good.replace('"context_size": 256', '"context_size": "big"'))
    assert isinstance(configs.refresh("alpha"), ConfigError)  # read now
    assert configs.valid("alpha") is None and aliases(configs.last_good("alpha")) == ["tiny"]
    assert "model.context_size" in configs.problems["alpha"]
    said = seen[-1]
    assert said.config is None and "last good version stays in force" in (said.reason or "")
    cfg.write_text(good)
    assert asyncio.run(configs.rescan()).changed == ["alpha"]
    assert "valid again" in (seen[-1].reason or "") and not configs.problems


def test_drift_and_what_a_change_means_to_a_running_server(home: Home, tiny_model: Path) -> None:
    cfg = write_config(home, "alpha", tiny_model, free_port())
    configs, seen = watched(home)
    configs.prime()
    started = configs.valid("alpha")
    assert started is not None
    running = InstanceSnapshot(
        "alpha", State.RUNNING, Desired.RUNNING, attached=True, config_hash=started.raw_hash
    )
    assert not configs.drifted("alpha", running.running_hash)
    cfg.write_text(cfg.read_text().replace('"context_size": 256', '"context_size": 512'))
    asyncio.run(configs.rescan(lambda _name: running))
    assert configs.drifted("alpha", running.running_hash)
    assert "alpha keeps running with the config it started with" in (seen[-1].reason or "")
    assert configs.key("alpha", started.raw_hash) is None  # not the version on disk now
    now = configs.valid("alpha")
    assert now is not None and configs.key("alpha", now.raw_hash) is not None


def test_removal_waits_out_a_move_then_write(
    home: Home, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(configs_module, "GONE_GRACE_S", 0.05)
    write_config(home, "alpha", tiny_model, free_port())
    write_config(home, "beta", tiny_model, free_port())
    configs, seen = watched(home)
    configs.prime()
    assert configs.names() == ["alpha", "beta"]
    shutil.rmtree(home.instance_dir("alpha"))
    found = asyncio.run(configs.rescan())
    assert found.removed == ["alpha"] and configs.names() == ["beta"]
    assert configs.current("alpha") is None and configs.last_good("alpha") is None
    assert (seen[-1].reason or "").endswith("was removed")  # nothing ran: nothing to stop


def test_only_names_of_instances_are_read(home: Home, tiny_model: Path) -> None:
    """A name from a request (the gateway's /upstream/NAME) never reads a path outside
    instances/."""
    write_config(home, "alpha", tiny_model, free_port())
    outside = home.root / "x" / "config.json"
    outside.parent.mkdir(parents=True)
    outside.write_text((home.config_path("alpha")).read_text().replace("alpha", "x"))
    configs, _ = watched(home)
    assert configs.refresh("../x") is None and "../x" not in configs
    assert configs.refresh("missing") is None
    assert isinstance(configs.refresh("alpha"), LoadedConfig) and configs.names() == ["alpha"]
