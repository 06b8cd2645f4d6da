"""The root command group: it imports a command's module only when that command runs.

Help, completion and "did you mean" read the static table of cli/commands.py; running a
command (or its ``--help``) imports its module and builds its click command exactly as
Typer builds the commands of an eager root (``typer.main.get_group_from_info``, with the
root's settings), so a command behaves and prints the same either way.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import click
from typer.core import TyperGroup
from typer.main import get_group_from_info
from typer.models import TyperInfo

from llama_orchestrator.cli.commands import BY_NAME, COMMANDS, Entry

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem


class LazyGroup(TyperGroup):
    """A TyperGroup whose table commands (cli/commands.py) are built on first use."""

    pretty_exceptions_short = True  # as the root Typer's (its default)

    def list_commands(self, ctx: click.Context) -> list[str]:
        own = [name for name in self.commands if name not in BY_NAME]  # the hidden `top`
        return own + [entry.name for entry in COMMANDS]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = self.commands.get(cmd_name)
        if command is None and cmd_name in BY_NAME:
            self._load(BY_NAME[cmd_name])
            command = self.commands.get(cmd_name)
        return command

    def _load(self, entry: Entry) -> None:
        """Import ``entry``'s module and add its command(s): a group under its name, or
        every command of the module's Typer that the table names."""
        # __import__, not importlib.import_module: -X importtime reports only the former.
        module = __import__(f"llama_orchestrator.cli.{entry.module}", fromlist=["app"])
        built = get_group_from_info(
            TyperInfo(module.app, name=entry.name if entry.group else None),
            pretty_exceptions_short=self.pretty_exceptions_short,
            suggest_commands=self.suggest_commands,
            rich_markup_mode=self.rich_markup_mode,
        )
        if entry.group:
            self.commands[entry.name] = built
            return
        for name, command in built.commands.items():
            if name in BY_NAME and BY_NAME[name].module == entry.module:
                self.commands.setdefault(name, command)

    def _described(self, ctx: click.Context) -> Iterator[tuple[str, click.Command]]:
        """The visible commands, in order; those not loaded yet as stand-ins that carry
        the table's help (enough to list them, nothing to run)."""
        for name in self.list_commands(ctx):
            command = self.commands.get(name)
            if command is None and name in BY_NAME:
                entry = BY_NAME[name]
                command = click.Command(
                    name,
                    help=None if entry.short else entry.help,
                    short_help=entry.help if entry.short else None,
                    hidden=entry.hidden,
                )
            if command is not None and not command.hidden:
                yield name, command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's own listing, from the table (no command module imported)."""
        commands = list(self._described(ctx))
        if not commands:
            return
        limit = formatter.width - 6 - max(len(name) for name, _ in commands)
        rows = [(name, command.get_short_help_str(limit)) for name, command in commands]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[CompletionItem]:
        """The command names (from the table), then the root's options."""
        from click.shell_completion import CompletionItem

        results = [
            CompletionItem(name, help=command.get_short_help_str())
            for name, command in self._described(ctx)
            if name.startswith(incomplete)
        ]
        results.extend(click.Command.shell_complete(self, ctx, incomplete))
        return results

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as e:
            # click (8.4+) suggests from the commands it holds: here, those loaded.
            no_such = getattr(click.exceptions, "NoSuchCommand", None)
            if no_such is not None and isinstance(e, no_such):
                raise no_such(
                    e.command_name, possibilities=self.list_commands(ctx), ctx=ctx
                ) from None
            raise
