"""``describe``: one instance in full, gathered from its config, records and model file.

Shared by ``llama-orch describe`` and the dashboard, so it raises instead of exiting.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from typing import Any

from llama_orchestrator.engine.states import ALIVE
from llama_orchestrator.home import Home
from llama_orchestrator.redact import shown_argv, shown_env
from llama_orchestrator.state.drift import config_diff, is_live
from llama_orchestrator.state.rows import instance_status


def _process_env(row: dict[str, Any], keys: list[str]) -> dict[str, str] | None:
    """The values of ``keys`` in the recorded server's own environment, or None.

    None when the process is gone, is not the one recorded (a reused PID) or does not let
    its environment be read.
    """
    import psutil

    from llama_orchestrator.engine.process import Identity

    pid, create_time, cmdline = row.get("pid"), row.get("pid_create_time"), row.get("cmdline")
    if not (pid and create_time and cmdline):
        return None
    if not Identity(int(pid), float(create_time), list(cmdline)).matches_live():
        return None
    try:
        environ = psutil.Process(int(pid)).environ()
    except (psutil.Error, OSError):
        return None
    return {k: environ[k] for k in keys if k in environ}


Records = tuple[dict[str, Any] | None, list[dict[str, Any]], dict[str, Any] | None]


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
        if started is None or row is None or started[0] != row.get("config_hash"):
            return row, store.events(name, 15), None
        return row, store.events(name, 15), started[2]
    finally:
        store.close()


def _drift(
    row: dict[str, Any] | None, now_hash: str | None, was: dict[str, Any] | None, now: Any
) -> dict[str, Any]:
    """``config_changed`` and ``config_diff`` (issue 11): how the config on disk differs
    from the one the live server started with. The diff is None when it cannot be told
    (the start's config was not recorded, or the file no longer loads)."""
    recorded = row.get("config_hash") if row else None
    if not is_live(row) or not recorded or recorded == now_hash:
        return {"config_changed": False, "config_diff": []}
    diff = config_diff(was, now) if was is not None and isinstance(now, dict) else None
    return {"config_changed": True, "config_diff": diff}


def _runtime(
    name: str, row: dict[str, Any] | None
) -> tuple[dict[str, Any] | None, list[str] | None]:
    """The runtime part of a description, and the recorded command line of a live server."""
    if row is None:
        return None, None
    runtime = instance_status(name, row)
    runtime.pop("name")
    start = runtime["start_time"]
    alive = runtime["status"] in ALIVE
    runtime["uptime_s"] = round(time.time() - start, 1) if start and alive else None
    recorded = [str(a) for a in runtime["cmdline"]] if alive and runtime["cmdline"] else None
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
    home: Home, name: str, row: dict[str, Any], events: list[dict[str, Any]], error: Exception
) -> dict[str, Any]:
    """What the records tell of an instance whose config no longer loads (issue 10): a
    server may still run with the config it started with, and must stay visible."""
    from llama_orchestrator.config.loader import ConfigError
    from llama_orchestrator.config.schema import LogsConfig

    runtime, recorded = _runtime(name, row)
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
    from llama_orchestrator.engine.binary import BinaryError, ResolvedBinary, resolve_binary
    from llama_orchestrator.engine.command import LaunchSpec, launch_spec, log_paths

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
    runtime, recorded = _runtime(name, row)
    if loaded.remote is not None:  # no model, binary, command or logs here (issue 13)
        from llama_orchestrator.state.remote_view import remote_data

        data["model_file"] = None
        data["remote"] = remote_data(home, loaded)
        data["runtime"] = runtime
        data["events"] = events
        return data

    binary: ResolvedBinary | None = None
    spec: LaunchSpec | None = None
    try:
        binary = resolve_binary(loaded.config.binary, home, config_dir=loaded.path.parent)
        spec = launch_spec(loaded, binary, home.root)
    except BinaryError as e:
        data["binary"] = {"error": str(e)}
    if recorded is not None and runtime is not None and row is not None:
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
    if spec is not None:
        env = dict(spec.env_overrides)
        env_source = "would_run"
        if recorded is not None and row is not None:
            live = _process_env(row, list(env))
            if live is not None:
                env, env_source = live, "process"
        data["env_overrides"] = shown_env(env)
        data["env_source"] = env_source
        # the part of env_overrides the backend table produced (issue 5, part 2); the
        # config's own env wins over it
        data["env_generated"] = {
            k: env[k] for k in spec.generated_env if k in env and k not in loaded.config.env
        }
    data["logs"] = {
        stream: {"path": str(p), "bytes": p.stat().st_size if p.exists() else None}
        for stream, p in zip(("stdout", "stderr"), log_paths(loaded, home.root), strict=True)
    }
    data["metrics"] = _metrics(data.get("command"), list(loaded.config.args))
    data["runtime"] = runtime
    data["events"] = events
    data["model_info"] = _model_info(loaded.model_path)
    return data


def render_describe(data: dict[str, Any]) -> str:
    """``describe``'s human-readable form (the CLI and the dashboard show the same)."""
    out: list[str] = []

    def line(key: str, value: Any) -> None:
        out.append(f"{key + ':':<15} {'-' if value is None else value}")

    line("Name", data["name"])
    line("Config", data["config_file"])
    if data.get("config_error"):
        out.append("Config error:")
        out.extend(f"  {text}" for text in str(data["config_error"]).splitlines())
    if data.get("remote"):
        from llama_orchestrator.state.remote_view import render_remote

        out.extend(render_remote(data["remote"]))
    else:
        _model_and_binary(data, line)
    # A running server's own command line; else the one a start would run.
    would_run = " (would run)"
    if "command_line" in data:
        recorded = data.get("command_source") == "recorded"
        line("Command" + ("" if recorded else would_run), data["command_line"])
    if "env_overrides" in data:
        env = data["env_overrides"] or {}
        generated = data.get("env_generated") or {}
        from_process = data.get("env_source") == "process"
        line(
            "Environment" + ("" if from_process else would_run),
            " ".join(
                f"{k}={shlex.quote(v)}" + (" (generated)" if k in generated else "")
                for k, v in env.items()
            )
            or None,
        )
    metrics = data.get("metrics")
    if metrics:
        line("Metrics", _metrics_text(metrics))
    rt = data.get("runtime")
    if rt is None:
        out.append("Runtime:        never started")
    else:
        out.append("Runtime:")
        for key in (
            "status",
            "desired",
            "health",
            "pid",
            "port",
            "uptime_s",
            "restart_count",
            "exit_code",
            "exit_signal",
            "last_error",
        ):
            out.append(f"  {key + ':':16}{'-' if rt.get(key) is None else rt.get(key)}")
        if rt.get("start_time"):
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(rt["start_time"]))
            out.append(f"  {'started:':16}{started}")
    if data.get("config_changed"):
        out.extend(_drift_lines(data))
    for stream, info in (data.get("logs") or {}).items():
        size = "missing" if info["bytes"] is None else f"{info['bytes']} bytes"
        line(f"Log {stream}", f"{info['path']} ({size})")
    if data["config"] is not None:
        out.append("Config (with defaults):")
        for text in json.dumps(data["config"], indent=2).splitlines():
            out.append(f"  {text}")
    if data["events"]:
        out.append("Events:")
        out.extend(f"  {event_line(e)}" for e in data["events"])
    return "\n".join(out)


def _metrics_text(metrics: dict[str, Any]) -> str:
    if not metrics["enabled"]:
        return "off (started without --metrics; a restart enables it)"
    how = "in args" if metrics["source"] == "args" else "enabled automatically"
    return f"{metrics['path']} ({how})"


def _drift_lines(data: dict[str, Any]) -> list[str]:
    name = data["name"]
    out = [f"Config changed: since it started (`llama-orch up {name}` recreates it)"]
    diff = data.get("config_diff")
    if diff is None:
        why = "it no longer loads" if data.get("config_error") else "not recorded"
        out.append(f"  (the fields that changed cannot be listed: {why})")
        return out
    for d in diff:
        was, now = json.dumps(d["was"]), json.dumps(d["now"])
        out.append(f"  {d['field']}: {was} -> {now}"[:200])
    return out


def event_line(e: dict[str, Any]) -> str:
    """One recorded event: time, kind, what changed (``old -> new``, or the PID of a
    spawned or adopted server), reason."""
    stamp = time.strftime("%H:%M:%S", time.localtime(e["ts"]))
    old, new = e.get("old"), e.get("new")
    if old and new:
        arc = f"{old} -> {new}"  # a state or health change; an exit records its states
    elif new and str(new).isdigit():
        arc = f"pid {new}"
    else:
        arc = str(new or "")
    reason = " ".join(str(e.get("reason") or "").splitlines())  # a refusal may span lines
    return f"{stamp}  {e['kind']:<13} {arc:<22} {reason}"[:200]


def _model_and_binary(data: dict[str, Any], line: Callable[[str, Any], None]) -> None:
    """The lines of a local instance's model file and binary."""
    line("Model", data["model_file"])
    mi = data.get("model_info") or {}
    if "error" in mi:
        line("Model info", f"unreadable: {mi['error']}")
    else:
        ctx = mi.get("context_length")
        line(
            "Model info",
            f"{mi.get('architecture') or '?'}, {mi['parameters_human']} parameters, "
            f"{mi.get('quantization') or '?'}, {mi.get('layers') or '?'} layers, "
            f"trained context {ctx or '?'}, {mi['file_size'] / 1e6:.1f} MB",
        )
    b = data.get("binary") or {}
    if "error" in b:
        line("Binary", f"unavailable: {b['error']}")
    else:
        line("Binary", f"{b['path']} [{b['source']}]")
        line("Version", b.get("version"))


def _shown_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config as shown (describe, the web page): secret values in ``args`` and
    ``env`` as ``***``; the file itself holds them."""

    if config.get("args"):
        config["args"] = shown_argv(list(config["args"]))
    if config.get("env"):
        config["env"] = shown_env(config["env"])
    return config
