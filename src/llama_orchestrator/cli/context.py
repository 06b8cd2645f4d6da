"""What the root command hands every command: a typed, frozen context object.

Click keeps one ``obj`` per invocation on the root context; the root callback sets it to
an :class:`AppContext` and commands read it through :func:`app_context`, never through
a dict's keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import click

from llama_orchestrator.home import Home


@dataclass(frozen=True)
class AppContext:
    """The root options: ``--home`` as given (None: the default home)."""

    home: str | None = None

    def resolve_home(self) -> Home:
        """The workspace these options name ($LLAMA_ORCH_HOME, else the per-user folder)."""
        return Home.resolve(self.home)


def app_context(ctx: click.Context) -> AppContext:
    """The root's :class:`AppContext` (the defaults when a command runs without the root,
    as a test invoking one command's Typer does)."""
    obj = ctx.find_root().obj
    return obj if isinstance(obj, AppContext) else AppContext()
