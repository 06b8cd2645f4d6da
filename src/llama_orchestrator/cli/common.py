"""Small pieces every command module shares: the chosen home, stderr messages, exits.

Data goes to stdout, messages to stderr, so ``llama-orch ps --json | jq`` works.
Exit codes: 0 success, 1 failure, 2 usage.
"""

from __future__ import annotations

import sys
from typing import NoReturn

import typer

from llama_orchestrator.home import Home

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2


def home_of(ctx: typer.Context) -> Home:
    root = ctx.find_root()
    obj = root.obj if isinstance(root.obj, dict) else {}
    return Home.resolve(obj.get("home"))


def say(message: str) -> None:
    """A message for the person (stderr), never mixed into data on stdout."""
    print(message, file=sys.stderr, flush=True)


def fail(message: str, code: int = EXIT_FAIL) -> NoReturn:
    say(f"error: {message}")
    raise typer.Exit(code)


def require_known(home: Home, names: list[str]) -> list[str]:
    """Fail (exit 1) when any name is not a defined instance; else the defined names."""
    from llama_orchestrator.home import unknown_instance_message

    known = home.instance_names()
    unknown = [n for n in names if n not in known]
    if unknown:
        fail(unknown_instance_message(unknown, known))
    return known


def check_names(names: list[str]) -> None:
    """Refuse names that could escape the instances folder before touching anything."""
    from llama_orchestrator.home import name_problem

    for name in names:
        problem = name_problem(name)
        if problem:
            fail(problem, EXIT_USAGE)
