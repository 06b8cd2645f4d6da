"""A fast path for ``llama-orch ps``, taken before the Typer app is even imported.

Typer and click cost ~50 ms to import on a small machine, more than all of ``ps``'s own
work; people run ``ps`` in watch loops and scripts. This path accepts exactly the plain
forms of ``ps`` (``--home``, ``-a``, ``--json``, ``-q``, ``--filter``) and hands anything
else (``--help``, a typo, another command) to the full CLI, which prints the same output
through the same code (cli/ps_view.py).
"""

from __future__ import annotations

_FLAGS = {"-a": "all_", "--all": "all_", "--json": "as_json", "-q": "quiet", "--quiet": "quiet"}


def try_fast(argv: list[str]) -> int | None:
    """Run ``argv`` if it is a plain ``ps``; else None (the full CLI takes over)."""
    args = list(argv)
    home = None
    if args[:1] == ["--home"] and len(args) >= 2:
        home, args = args[1], args[2:]
    elif args[:1] and args[0].startswith("--home="):
        home, args = args[0].split("=", 1)[1], args[1:]
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


def main() -> None:
    """The console script and ``python -m llama_orchestrator``."""
    import sys

    code = try_fast(sys.argv[1:])
    if code is not None:
        raise SystemExit(code)
    from llama_orchestrator.cli.app import main as full

    full()
