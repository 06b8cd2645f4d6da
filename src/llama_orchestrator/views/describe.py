"""``describe``: one instance in full, gathered from its config, records and model file.

Shared by ``llama-orch describe``, the dashboard and the web page, so it raises instead
of exiting; views/describe_text.py prints it.
"""

from __future__ import annotations

import shlex
import time
from typing import TYPE_CHECKING, Any

from llama_orchestrator.home import Home
from llama_orchestrator.redact import shown_argv, shown_env
from llama_orchestrator.state.drift import config_diff, is_live
from llama_orchestrator.state.records import InstanceRecord
from llama_orchestrator.views.kvcache_view import kv_cache_of

if TYPE_CHECKING:
    from llama_orchestrator.config.loader import LoadedConfig
    from llama_orchestrator.engine.command import LaunchSpec


def _process_env(row: InstanceRecord, keys: list[str]) -> dict[str, str] | None:
    """The values of ``keys`` in the recorded server's own environment, or None.

    None when the process is gone, is not the one recorded (a reused PID) or does not let
    its environment be read.
    """
    import psutil

    from llama_orchestrator.engine.process import Identity

    recorded = row.process()
    if recorded is None or not Identity(*recorded).matches_live():
        return None
    pid = recorded[0]
    try:
        environ = psutil.Process(int(pid)).environ()
    except (psutil.Error, OSError):
        return None
    return {k: environ[k] for k in keys if k in environ}


Records = tuple[InstanceRecord | None, list[dict[str, Any]], dict[str, Any] | None]


def _records(home: Home, name: str) -> Records:
    """The instance's state row (None: it never ran), its recent events and the config
    its live server was started with (None: not recorded)."""
    from llama_orchestrator.state.db import StateStore

    store = StateStore.open_for_reading(home.db_path)
    if store is None:
        return None, [], None
    try:
        row = store.get(name)
        started = store.started_configs([name]).get(name)
        if started is None or row is None or started[0] != row.config_hash:
            return row, store.events(name, 15), None
        return row, store.events(name, 15), started[2]
    finally:
        store.close()


def _drift(
    row: InstanceRecord | None, now_hash: str | None, was: dict[str, Any] | None, now: Any
) -> dict[str, Any]:
    """``config_changed`` and ``config_diff`` (issue 11): how the config on disk differs
    from the one the live server started with. The diff is None when it cannot be told
    (the start's config was not recorded, or the file no longer loads)."""
    recorded = row.config_hash if row else None
    if not is_live(row) or not recorded or recorded == now_hash:
        return {"config_changed": False, "config_diff": []}
    diff = config_diff(was, now) if was is not None and isinstance(now, dict) else None
    return {"config_changed": True, "config_diff": diff}


def _runtime(row: InstanceRecord | None) -> tuple[dict[str, Any] | None, list[str] | None]:
    """The runtime part of a description, and the recorded command line of a live server
    (as shown: a key given on it is ``***``)."""
    if row is None:
        return None, None
    runtime = row.status_dict()
    runtime.pop("name")
    runtime["uptime_s"] = row.uptime_s(time.time())
    recorded = list(runtime["cmdline"]) if row.alive and runtime["cmdline"] else None
    return runtime, recorded


def _model_info(path: Any) -> dict[str, Any]:
    from llama_orchestrator.models.header import GGUFError, read_model_info

    try:
        info = read_model_info(path).to_dict()
    except (GGUFError, OSError) as e:
        return {"error": str(e)}
    info.pop("metadata")
    return info


def _from_record(
    home: Home, name: str, row: InstanceRecord, events: list[dict[str, Any]], error: Exception
) -> dict[str, Any]:
    """What the records tell of an instance whose config no longer loads (issue 10): a
    server may still run with the config it started with, and must stay visible."""
    from llama_orchestrator.config.loader import ConfigError
    from llama_orchestrator.config.schema import LogsConfig

    runtime, recorded = _runtime(row)
    assert runtime is not None
    path = home.config_path(name)
    removed = not isinstance(error, ConfigError)
    data: dict[str, Any] = {
        "name": name,
        "config_file": str(path),
        "config": None,
        "config_error": f"{path} no longer exists (config removed)" if removed else str(error),
        "config_removed": removed,
        **_drift(None if removed else row, None, None, None),
        "model_file": runtime["model"],
        "binary": {"error": "not recorded"},
    }
    if runtime["binary"]:
        version = runtime["binary_version"]
        data["binary"] = {"path": runtime["binary"], "source": "recorded", "version": version}
    if recorded is not None:
        data["command"] = shown_argv(recorded)
        data["command_line"] = shlex.join(data["command"])
        data["command_source"] = "recorded"
    defaults = LogsConfig()
    data["logs"] = {}
    for stream, template in (("stdout", defaults.stdout), ("stderr", defaults.stderr)):
        p = home.root / template.replace("{name}", name)  # what the server most likely uses
        data["logs"][stream] = {"path": str(p), "bytes": p.stat().st_size if p.exists() else None}
    data["metrics"] = _metrics(data.get("command"), [])
    data["runtime"] = runtime
    data["memory"] = memory_of(home, name, row)
    data["kv_cache"] = kv_cache_of(home, name)
    data["events"] = events
    data["model_info"] = (
        _model_info(runtime["model"]) if runtime["model"] else {"error": "no model recorded"}
    )
    return data


def _metrics(command: list[str] | None, args: list[str]) -> dict[str, Any] | None:
    """Whether the server serves ``/metrics`` (issue 12: the engine passes ``--metrics``
    to every server, the embedded engine included), read from its command line. None
    when there is no command line to read."""
    if command is None:
        return None
    if "--metrics" not in command:
        # a server started by an older version: the gateway's /metrics has a gap for it
        return {"enabled": False, "path": "/metrics", "source": "not in its command line"}
    source = "args" if "--metrics" in args else "automatic"
    return {"enabled": True, "path": "/metrics", "source": source}


def describe_data(home: Home, name: str) -> dict[str, Any]:
    """Everything known about one instance; raises UnknownInstance or ConfigError.

    For a server that runs (its state is one of ``ALIVE``) the command line and binary
    are the recorded ones, and the environment is read from the process: rebuilding them
    here would use this process's ``LLAMA_SERVER`` and ``CUDA_VISIBLE_DEVICES``, not the
    daemon's. Otherwise they are what a start would run, built here
    (``command_source`` says which). An instance with a record whose config is invalid
    or removed is described from its record, with ``config_error`` saying why; without a
    record the error is raised.
    """
    from llama_orchestrator.config.loader import ConfigError, UnknownInstance, load_instance
    from llama_orchestrator.engine.command import log_paths

    row, events, started = _records(home, name)
    try:
        loaded = load_instance(home, name)
    except (UnknownInstance, ConfigError) as e:
        if row is None:
            raise
        return _from_record(home, name, row, events, e)
    data: dict[str, Any] = {
        "name": name,
        "config_file": str(loaded.path),
        "config": _shown_config(
            loaded.config.model_dump(mode="json", by_alias=True, exclude_none=True)
        ),
        "config_error": None,
        "config_removed": False,
        "model_file": str(loaded.model_path),
    }
    was = _shown_config(started) if started is not None else None
    data.update(_drift(row, loaded.raw_hash, was, data["config"]))
    runtime, recorded = _runtime(row)
    if loaded.remote is not None:  # no model, binary, command or logs here (issue 13)
        from llama_orchestrator.state.remote_view import remote_data

        data["model_file"] = None
        data["remote"] = remote_data(home, loaded)
        data["runtime"] = runtime
        data["events"] = events
        return data

    spec = _command(home, loaded, data, runtime, recorded)
    if spec is not None:
        _environment(data, spec, loaded, row if recorded is not None else None)
    data["logs"] = {
        stream: {"path": str(p), "bytes": p.stat().st_size if p.exists() else None}
        for stream, p in zip(("stdout", "stderr"), log_paths(loaded, home.root), strict=True)
    }
    data["metrics"] = _metrics(data.get("command"), list(loaded.config.args))
    data["runtime"] = runtime
    data["placement"] = placement_of(loaded, runtime, events)
    data["memory"] = memory_of(home, name, row)
    data["kv_cache"] = kv_cache_of(home, name)
    data["events"] = events
    data["model_info"] = _model_info(loaded.model_path)
    return data


def placement_of(
    loaded: LoadedConfig, runtime: dict[str, Any] | None, events: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """Where a ``gpu.device_id: "auto"`` instance runs and why (issue 7): the device of
    its run (None when it does not run) and its last ``placed`` event's sentence; None
    for a device given in the config."""
    if not loaded.config.gpu.auto:
        return None
    alive = runtime is not None and runtime.get("pid") is not None
    placed = [e for e in events if e.get("kind") == "placed"]
    return {
        "device_id": "auto",
        "device": runtime.get("device") if alive and runtime is not None else None,
        "reason": placed[-1].get("reason") if placed else None,
    }


def memory_of(home: Home, name: str, row: InstanceRecord | None) -> dict[str, Any]:
    """Its run's estimate, last reading and peak per device, as its actor recorded them
    (issue 18; empty when it does not run or has not been measured yet)."""
    from llama_orchestrator.state import memory as recorded_memory
    from llama_orchestrator.state.db import StateStore

    if row is None or row.pid is None:
        return {}
    store = StateStore.open_for_reading(home.db_path)
    if store is None:
        return {}
    try:
        return recorded_memory.recorded(store, name, row.pid) or {}
    finally:
        store.close()


def _command(
    home: Home,
    loaded: LoadedConfig,
    data: dict[str, Any],
    runtime: dict[str, Any] | None,
    recorded: list[str] | None,
) -> LaunchSpec | None:
    """Fill in the binary and the command line: a live server's recorded ones, else what
    a start would run. Returns the launch spec a start would use (None: no binary)."""
    from llama_orchestrator.engine.binary import BinaryError, ResolvedBinary, resolve_binary
    from llama_orchestrator.engine.command import launch_spec

    binary: ResolvedBinary | None = None
    spec: LaunchSpec | None = None
    try:
        binary = resolve_binary(loaded.config.binary, home, config_dir=loaded.path.parent)
        spec = launch_spec(loaded, binary, home.root)
    except BinaryError as e:
        data["binary"] = {"error": str(e)}
    if recorded is not None and runtime is not None:
        version = runtime["binary_version"]
        if version is None and binary is not None and binary.display == runtime["binary"]:
            version = binary.version()  # recorded once the daemon's probe has answered
        data["binary"] = {"path": runtime["binary"], "source": "recorded", "version": version}
        data["command"] = shown_argv(recorded)
        data["command_line"] = shlex.join(data["command"])
        data["command_source"] = "recorded"
    elif binary is not None and spec is not None:
        data["binary"] = {
            "path": binary.display,
            "source": binary.source,
            "version": binary.version(),
        }
        data["command"] = shown_argv(spec.argv)
        data["command_line"] = shlex.join(data["command"])
        data["command_source"] = "would_run"
    return spec


def _environment(
    data: dict[str, Any], spec: LaunchSpec, loaded: LoadedConfig, live: InstanceRecord | None
) -> None:
    """Fill in the environment overrides: the live server's own (``live``: its record)
    when they can be read, else what a start would set."""
    env = dict(spec.env_overrides)
    env_source = "would_run"
    if live is not None:
        found = _process_env(live, list(env))
        if found is not None:
            env, env_source = found, "process"
    data["env_overrides"] = shown_env(env)
    data["env_source"] = env_source
    # the part of env_overrides the backend table produced (issue 5, part 2); the
    # config's own env wins over it
    data["env_generated"] = {
        k: env[k] for k in spec.generated_env if k in env and k not in loaded.config.env
    }


def _shown_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config as shown (describe, the web page): secret values in ``args`` and
    ``env`` as ``***``; the file itself holds them."""

    if config.get("args"):
        config["args"] = shown_argv(list(config["args"]))
    if config.get("env"):
        config["env"] = shown_env(config["env"])
    return config
