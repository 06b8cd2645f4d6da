"""Small pieces every command module shares: the chosen home, stderr messages, exits.

Data goes to stdout, messages to stderr, so ``llama-orch ps --json | jq`` works.
Exit codes: 0 success, 1 failure, 2 usage.
"""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING, NoReturn

import typer

from llama_orchestrator.home import Home

if TYPE_CHECKING:
    from llama_orchestrator.client.control import Client

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2


def home_of(ctx: typer.Context) -> Home:
    """The workspace the root's ``--home`` names (cli/context.py)."""
    from llama_orchestrator.cli.context import app_context

    return app_context(ctx).resolve_home()


def say(message: str) -> None:
    """A message for the person (stderr), never mixed into data on stdout."""
    print(message, file=sys.stderr, flush=True)


def quiet_exit() -> typer.Exit:
    """stdout was closed (``| head``): stop writing, exit 0 without a traceback."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
    return typer.Exit(0)


def fail(message: str, code: int = EXIT_FAIL) -> NoReturn:
    say(f"error: {message}")
    raise typer.Exit(code)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def one_line(text: str) -> str:
    """``text`` with newlines and other control characters shown escaped (``\\n``).

    A message that quotes another program's command line (the holder of a port, say)
    may carry its newlines; printed raw they break a one-line error (issue 10).
    """
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def http_url(host: object, port: object) -> str:
    """``http://host:port``, with an IPv6 address in brackets (``http://[::1]:8001``)."""
    h = str(host)
    return f"http://[{h}]:{port}" if ":" in h else f"http://{h}:{port}"


def daemon_client(home: Home) -> Client:
    """A client of the daemon, starting it when none runs (and saying so); exit 1 when
    it cannot be started or reached."""
    from llama_orchestrator.client.control import DaemonError, ensure_daemon

    try:
        client, started = ensure_daemon(home)
    except DaemonError as e:
        fail(str(e))
    if started:
        say("started the daemon")
    return client


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
