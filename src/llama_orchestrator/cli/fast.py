"""Fast paths for ``llama-orch ps`` and ``daemon run``, taken before Typer is imported.

Typer and click cost ~50 ms to import on a small machine, more than all of ``ps``'s own
work; people run ``ps`` in watch loops and scripts. This path accepts exactly the plain
forms of ``ps`` (``--home``, ``-a``, ``--json``, ``-q``, ``--filter``) and hands anything
else (``--help``, a typo, another command) to the full CLI, which prints the same output
through the same code (cli/ps_view.py).

``daemon run`` (the keeper, daemon/keeper.py) and ``daemon run --worker`` (the daemon it
starts) are two processes every cold ``up`` waits for in turn; neither needs the CLI, so
their plain forms (``--home``, ``--port N``, ``--worker``) run here too, as
cli/daemon_cmd.py's ``run`` would run them.
"""

from __future__ import annotations

_FLAGS = {"-a": "all_", "--all": "all_", "--json": "as_json", "-q": "quiet", "--quiet": "quiet"}


def _split_home(argv: list[str]) -> tuple[str | None, list[str]]:
    """The root's ``--home`` (None when not given) and the arguments after it."""
    args = list(argv)
    if args[:1] == ["--home"] and len(args) >= 2:
        return args[1], args[2:]
    if args[:1] and args[0].startswith("--home="):
        return args[0].split("=", 1)[1], args[1:]
    return None, args


def try_fast(argv: list[str]) -> int | None:
    """Run ``argv`` if it is a plain ``ps``; else None (the full CLI takes over)."""
    home, args = _split_home(argv)
    if args[:1] != ["ps"]:
        return None
    opts = {"all_": False, "as_json": False, "quiet": False}
    filters: list[str] = []
    rest = args[1:]
    while rest:
        arg = rest.pop(0)
        if arg in _FLAGS:
            opts[_FLAGS[arg]] = True
        elif arg in ("--filter", "-f") and rest:
            filters.append(rest.pop(0))
        elif arg.startswith("--filter="):
            filters.append(arg.split("=", 1)[1])
        else:
            return None
    from llama_orchestrator.cli.ps_view import run_ps
    from llama_orchestrator.home import Home

    return run_ps(Home.resolve(home), filters=filters, **opts)


def try_daemon_run(argv: list[str]) -> int | None:
    """Run ``argv`` if it is a plain ``daemon run [--port N] [--worker]``; else None."""
    home, rest = _split_home(argv)
    if rest[:2] != ["daemon", "run"]:
        return None
    del rest[:2]
    port, worker = 0, False
    while rest:
        arg = rest.pop(0)
        value = arg.split("=", 1)[1] if arg.startswith("--port=") else None
        if arg == "--worker":
            worker = True
        elif arg == "--port" and rest and rest[0].isdigit():
            port = int(rest.pop(0))
        elif value is not None and value.isdigit():
            port = int(value)
        else:
            return None
    from llama_orchestrator.home import Home

    root = Home.resolve(home)
    if worker:
        from llama_orchestrator.daemon.server import run_daemon

        return run_daemon(root, port=port)
    from llama_orchestrator.daemon.keeper import run_keeper, worker_argv

    return run_keeper(root, worker_argv(root, port))


def main() -> None:
    """The console script and ``python -m llama_orchestrator``."""
    import sys

    code = try_fast(sys.argv[1:])
    if code is None:
        code = try_daemon_run(sys.argv[1:])
    if code is not None:
        raise SystemExit(code)
    from llama_orchestrator.cli.app import main as full

    full()
