"""``llama-orch dashboard``: the live, keyboard-driven view of every instance."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from llama_orchestrator.cli.common import EXIT_USAGE, fail, home_of

app = typer.Typer()


@app.command()
def dashboard(
    ctx: typer.Context,
    interval: Annotated[
        float,
        typer.Option(
            "--interval",
            "-n",
            min=0.2,
            help="Seconds between reads of the records while the daemon is down (and of "
            "the log tail).",
        ),
    ] = 1.0,
) -> None:
    """A live table of all instances (the ps columns), following the daemon's events.

    Keys: q quit, r refresh, u up, d down, R restart, l log tail, enter describe.
    Works over SSH in 80x24; while the daemon is down it reads the records every
    --interval seconds, and follows the events again once it is back.

    Example: llama-orch dashboard --interval 2
    """
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        fail("the dashboard needs an interactive terminal; try `llama-orch ps`", EXIT_USAGE)
    from llama_orchestrator.dashboard.app import DashboardApp

    DashboardApp(home_of(ctx), interval=interval).run()
