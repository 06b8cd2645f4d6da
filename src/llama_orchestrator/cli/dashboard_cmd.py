"""``llama-orch dashboard``: the live, keyboard-driven view of every instance."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from llama_orchestrator.cli.common import EXIT_USAGE, fail, home_of


def register(app: typer.Typer) -> None:
    @app.command()
    def dashboard(
        ctx: typer.Context,
        interval: Annotated[
            float,
            typer.Option("--interval", "-n", min=0.2, help="Seconds between refreshes."),
        ] = 1.0,
    ) -> None:
        """A live table of all instances (the ps columns), refreshed every second.

        Keys: q quit, r refresh, u up, d down, R restart, l log tail, enter describe.
        Works over SSH in 80x24; while the daemon is down it shows the last records.

        Example: llama-orch dashboard --interval 2
        """
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            fail("the dashboard needs an interactive terminal; try `llama-orch ps`", EXIT_USAGE)
        from llama_orchestrator.dashboard.app import DashboardApp

        DashboardApp(home_of(ctx), interval=interval).run()
