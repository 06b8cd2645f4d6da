"""The ``llama-orch`` command: a root Typer app and one module per command group.

The root is a :class:`~llama_orchestrator.cli.lazy.LazyGroup`: it lists every command from
the table in cli/commands.py and imports only the module of the command being run. Command
modules import their heavy dependencies inside the command bodies, so that read-only
commands such as ``ps`` start fast.
"""

from __future__ import annotations

from typing import Annotated

import typer

from llama_orchestrator import __version__
from llama_orchestrator.cli.context import AppContext
from llama_orchestrator.cli.lazy import LazyGroup

app = typer.Typer(
    name="llama-orch",
    help="A Docker-like control plane for llama.cpp servers.\n\n"
    "Examples:\n\n"
    "  llama-orch create gemma --model ./gemma.gguf --port 8002\n\n"
    "  llama-orch up gemma\n\n"
    "  llama-orch ps --all",
    cls=LazyGroup,
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
    ctx.obj = AppContext(home=home)


@app.command("top", hidden=True)
def _top() -> None:
    """`top` is `stats` here; click would suggest `stop` for it (issue 19, item 13)."""
    import sys

    print(
        "error: there is no `top` command; `llama-orch stats` shows the CPU, memory, "
        "requests in flight and tokens/s of running instances, live",
        file=sys.stderr,
    )
    raise typer.Exit(2)


def main() -> None:
    app()
