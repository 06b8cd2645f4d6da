"""The ``llama-orch`` command: a root Typer app and one module per command group.

Command modules import their heavy dependencies inside the command bodies so that
read-only commands such as ``ps`` start fast.
"""

from __future__ import annotations

from typing import Annotated

import typer

from llama_orchestrator import __version__
from llama_orchestrator.cli import (
    chat_cmd,
    config_cmd,
    daemon_cmd,
    dashboard_cmd,
    describe_cmd,
    devices_cmd,
    events_cmd,
    export_cmd,
    fit_cmd,
    gateway_cmd,
    health_cmd,
    info_cmd,
    lifecycle,
    logs_cmd,
    service_cmd,
    stats_cmd,
    ui_cmd,
)

app = typer.Typer(
    name="llama-orch",
    help="A Docker-like control plane for llama.cpp servers.\n\n"
    "Examples:\n\n"
    "  llama-orch create gemma --model ./gemma.gguf --port 8002\n\n"
    "  llama-orch up gemma\n\n"
    "  llama-orch ps --all",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    suggest_commands=False,  # click suggests already; both printed it twice (issue 10)
)


def _version(value: bool) -> None:
    if value:
        print(f"llama-orch {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    home: Annotated[
        str | None,
        typer.Option(
            "--home",
            help="Workspace folder (default: $LLAMA_ORCH_HOME, else the per-user data folder).",
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    ctx.obj = {"home": home}


config_cmd.register(app)
lifecycle.register(app)
describe_cmd.register(app)
logs_cmd.register(app)
events_cmd.register(app)
stats_cmd.register(app)
chat_cmd.register(app)
health_cmd.register(app)
daemon_cmd.register(app)
info_cmd.register(app)
dashboard_cmd.register(app)
ui_cmd.register(app)
devices_cmd.register(app)
fit_cmd.register(app)
service_cmd.register(app)
gateway_cmd.register(app)
export_cmd.register(app)
for _group in app.registered_groups:  # the command groups' own Typers, as above
    if _group.typer_instance is not None:
        _group.typer_instance.suggest_commands = False


def main() -> None:
    app()
