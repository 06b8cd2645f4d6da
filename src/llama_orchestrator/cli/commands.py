"""Every ``llama-orch`` command: its name, the module that defines it, its one-line help.

The root group (cli/lazy.py) lists commands and prints ``--help`` from this table and
imports only the module of the command being run: importing every command module and
building every Typer before dispatch cost ``up`` ~20 ms. The table is data only; a test
(tests/test_cli_lazy.py) checks it against the real commands so that it cannot drift.
"""

from __future__ import annotations

from typing import NamedTuple


class Entry(NamedTuple):
    """One command of the root: ``module`` (under ``llama_orchestrator.cli``) defines a
    Typer ``app``; a ``group`` entry is that whole Typer under ``name``, else ``name`` is
    one of its commands merged into the root. ``help`` is the command's first sentence,
    which listings shorten to fit, or with ``short`` its own ``short_help``, which they
    print whole."""

    name: str
    module: str
    help: str
    hidden: bool = False
    group: bool = False
    short: bool = False


# In the order `llama-orch --help` lists them.
COMMANDS: tuple[Entry, ...] = (
    Entry(
        "create",
        "create_cmd",
        "Write instances/NAME/config.json for a model; never overwrites an existing one.",
    ),
    Entry(
        "up",
        "lifecycle",
        "Start instances and wait until each is healthy (alias: start).",
        short=True,
    ),
    Entry(
        "down",
        "lifecycle",
        "Stop instances gracefully, then kill them (alias: stop).",
        short=True,
    ),
    Entry(
        "start",
        "lifecycle",
        "Start instances and wait until each answers /health with 200.",
        hidden=True,
    ),
    Entry(
        "stop",
        "lifecycle",
        "Stop instances (graceful signal, then kill after server.stop_timeout).",
        hidden=True,
    ),
    Entry("restart", "lifecycle", "Stop and start instances with their current config."),
    Entry(
        "rm",
        "lifecycle",
        "Remove instances: their folders and records (logs are kept unless --logs).",
    ),
    Entry(
        "ps",
        "lifecycle",
        "List instances: NAME PID PORT BACKEND DEVICE MODEL STATUS HEALTH UPTIME RESTARTS.",
    ),
    Entry(
        "describe",
        "describe_cmd",
        "Show an instance in full: config with defaults, command line, model, runtime, events.",
    ),
    Entry(
        "logs",
        "logs_cmd",
        "Show instances' logs (stdout and stderr, merged by time), like docker logs.",
    ),
    Entry(
        "events",
        "events_cmd",
        "Show instance events (state, health, exits, restarts, config...).",
    ),
    Entry(
        "stats",
        "stats_cmd",
        "Live CPU, RSS, VRAM, requests in flight and tokens/s of running instances.",
    ),
    Entry(
        "chat",
        "chat_cmd",
        "Send a prompt through the gateway and stream the answer as it arrives.",
    ),
    Entry(
        "health",
        "health_cmd",
        "Show an instance's health: state, last checks with latency, failure streak.",
    ),
    Entry(
        "info",
        "info_cmd",
        "Show the home folder, its files, the daemon and the default llama-server.",
    ),
    Entry(
        "dashboard",
        "dashboard_cmd",
        "A live table of all instances (the ps columns), following the daemon's events.",
    ),
    Entry("ui", "ui_cmd", "Open the web page (instances, activity, devices, playground)."),
    Entry("devices", "devices_cmd", "List GPUs with backend, index, name, total and free memory."),
    Entry(
        "fit",
        "fit_cmd",
        "Estimate weights, KV cache and compute memory; say whether it fits, suggest -ngl.",
    ),
    Entry(
        "templates",
        "fit_cmd",
        "List the config templates for `create --template`: built-in and the home's own.",
    ),
    Entry(
        "config",
        "config_cmd",
        "Check instance configs and export their JSON Schema.",
        group=True,
    ),
    Entry(
        "daemon",
        "daemon_cmd",
        "The supervisor daemon that owns every instance (started on demand by `up`).",
        group=True,
    ),
    Entry(
        "service",
        "service_cmd",
        "Run the daemon at boot/login as an OS service (it starts `autostart` instances).",
        group=True,
    ),
    Entry(
        "gateway",
        "gateway_cmd",
        "The OpenAI-compatible gateway the daemon serves in front of every instance.",
        group=True,
    ),
    Entry(
        "export",
        "export_cmd",
        "Export instances for another platform (Kubernetes).",
        group=True,
    ),
)

BY_NAME: dict[str, Entry] = {entry.name: entry for entry in COMMANDS}
