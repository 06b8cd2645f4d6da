"""``describe``'s text: what the CLI and the dashboard print of :func:`describe_data`.

The data (views/describe.py) is what ``describe --json`` and the web page show; this is
its human-readable form, one ``Key: value`` line each, then the runtime, logs, config
and recent events.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from typing import Any

from llama_orchestrator.views.kvcache_view import kv_cache_lines


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
    placement = data.get("placement")
    if placement:  # gpu.device_id "auto" (issue 7)
        where = placement.get("device") or "chosen at each start"
        said = placement.get("reason")
        line("Device", f"{where} (auto{': ' + said if said else ''})")
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
    out.extend(memory_lines(data.get("memory") or {}))
    out.extend(kv_cache_lines(data.get("kv_cache")))
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


def memory_lines(memory: dict[str, Any]) -> list[str]:
    """Estimate and measured side by side, per device (issue 18); a failed source says
    that the estimate holds, and why."""
    if not memory:
        return []
    out = [f"{'Memory (MiB):':14}" + "".join(f"{h:>11}" for h in ("estimate", "measured", "peak"))]
    for device, m in memory.items():
        shown = [m.get(k) for k in ("estimate_mb", "measured_mb", "peak_mb")]
        cells = "".join(f"{'-' if v is None else v:>11}" for v in shown)
        note = f"  (by {m['source']})" if m.get("source") and not m.get("unavailable") else ""
        if m.get("unavailable"):
            held = "the peak counts" if m.get("peak_mb") is not None else "the estimate holds"
            note = f"  ({m['source']} unavailable: {m['unavailable']}; {held})"
        out.append(f"  {device + ':':12}{cells}{note}")
    return out


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
