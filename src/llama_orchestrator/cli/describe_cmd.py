"""``llama-orch describe NAME``: config as loaded, the exact command, runtime, events."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from llama_orchestrator.cli.common import check_names, fail, home_of, say

app = typer.Typer()


@app.command()
def describe(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Instance name.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show an instance in full: config with defaults, command line, model, runtime, events.

    Examples: llama-orch describe gemma; llama-orch describe gemma --json | jq .runtime
    """
    from llama_orchestrator.config.loader import ConfigError, UnknownInstance
    from llama_orchestrator.views.describe import describe_data
    from llama_orchestrator.views.describe_text import render_describe

    check_names([name])
    try:
        data = describe_data(home_of(ctx), name)
    except UnknownInstance as e:
        fail(str(e))
    except ConfigError as e:
        fail(f"invalid config:\n{e}")
    if data.get("config_error"):
        # described from its records: a server may still run with its old config
        what = "was removed" if data.get("config_removed") else "is invalid"
        say(f"warning: the config of {name} {what}; showing what the records hold")
    print(json.dumps(data, indent=2) if as_json else render_describe(data))
