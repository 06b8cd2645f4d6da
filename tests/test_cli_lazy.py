"""The root command imports only the module of the command being run; its table of
commands (cli/commands.py) lists, helps and completes exactly as the real commands would."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from importlib import import_module
from pathlib import Path

import click
import typer
import typer.main

import llama_orchestrator.cli
from llama_orchestrator.cli.app import app
from llama_orchestrator.cli.commands import BY_NAME, COMMANDS
from llama_orchestrator.cli.lazy import LazyGroup
from llama_orchestrator.home import Home


def _root() -> LazyGroup:
    """A fresh root, as `llama-orch` builds it: nothing loaded but the hidden `top`."""
    group = typer.main.get_group(app)
    assert isinstance(group, LazyGroup)
    assert set(group.commands) == {"top"}
    return group


def _help(group: click.Group) -> str:
    with click.Context(group, info_name="llama-orch", terminal_width=100) as ctx:
        return group.get_help(ctx)


def _loaded(group: LazyGroup) -> LazyGroup:
    for entry in COMMANDS:
        assert group.get_command(click.Context(group), entry.name) is not None
    assert set(group.commands) == {"top", *BY_NAME}
    return group


def test_the_table_names_every_command_of_every_command_module() -> None:
    """A command added to a module's Typer, or a new command module, fails here until
    the table names it."""
    found: dict[str, str] = {}
    for info in pkgutil.iter_modules(llama_orchestrator.cli.__path__):
        if info.name == "app":
            continue
        module = import_module(f"llama_orchestrator.cli.{info.name}")
        sub = getattr(module, "app", None)
        if not isinstance(sub, typer.Typer):
            continue
        entry = next((e for e in COMMANDS if e.module == info.name), None)
        assert entry is not None, f"cli/{info.name}.py has commands the table lacks"
        if entry.group:
            found[entry.name] = info.name
            continue
        for name in typer.main.get_group(sub).commands:
            found[name] = info.name
    assert found == {e.name: e.module for e in COMMANDS}


def test_each_entry_has_its_command_s_help_and_visibility() -> None:
    group = _loaded(_root())
    for entry in COMMANDS:
        real = group.commands[entry.name]
        assert real.hidden == entry.hidden, entry.name
        assert isinstance(real, click.Group) == entry.group, entry.name
        assert bool(real.short_help) == entry.short, entry.name
        assert real.get_short_help_str(limit=10**6) == entry.help, entry.name


def test_help_lists_the_same_with_or_without_the_modules_loaded() -> None:
    cold = _help(_root())
    assert _help(_loaded(_root())) == cold
    rows = cold.split("Commands:\n", 1)[1].splitlines()
    listed = [row.split()[0] for row in rows if row[:2] == "  " and row[2:3] != " "]
    assert listed == [e.name for e in COMMANDS if not e.hidden]  # in the table's order


def test_completion_offers_the_same_with_or_without_the_modules_loaded() -> None:
    def offered(group: LazyGroup, incomplete: str) -> list[tuple[str, str | None]]:
        ctx = click.Context(group, info_name="llama-orch")
        return [(i.value, i.help) for i in group.shell_complete(ctx, incomplete)]

    for incomplete in ("", "d", "st", "--h"):
        assert offered(_root(), incomplete) == offered(_loaded(_root()), incomplete)
    assert [name for name, _ in offered(_root(), "st")] == ["stats"]  # start/stop: hidden


def test_a_typo_is_matched_against_every_command_not_only_those_loaded() -> None:
    group = _root()
    ctx = click.Context(group, info_name="llama-orch")
    try:
        group.resolve_command(ctx, ["restrat"])
    except click.UsageError as e:
        # as click matched it against every command, hidden ones too
        assert "(Did you mean one of: 'restart', 'start', 'stats'?)" in e.format_message()
    else:
        raise AssertionError("restrat resolved")


MODULES = (
    "import sys\n"
    "from llama_orchestrator.cli.fast import main\n"
    "sys.argv = ['llama-orch', *sys.argv[1:]]\n"
    "try:\n"
    "    main()\n"
    "except SystemExit:\n"
    "    pass\n"
    "print(sorted(m.rsplit('.', 1)[1] for m in sys.modules\n"
    "    if m.startswith('llama_orchestrator.cli.') and m.rsplit('.', 1)[1] in {names!r}))\n"
)


def _modules_after(home: Home, *args: str) -> list[str]:
    names = sorted({e.module for e in COMMANDS})
    out = subprocess.run(
        [sys.executable, "-c", MODULES.format(names=names), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"LLAMA_ORCH_HOME": str(home.root), "PATH": "/usr/bin:/bin"},
    )
    last = out.stdout.strip().splitlines()[-1]
    return list(eval(last))  # a list literal printed by the child


def test_a_command_imports_its_own_module_only(home: Home) -> None:
    assert _modules_after(home, "--version") == []
    assert _modules_after(home, "--help") == []
    assert _modules_after(home, "up", "--help") == ["lifecycle"]
    assert _modules_after(home, "daemon", "status") == ["daemon_cmd"]
    assert _modules_after(home, "templates") == ["fit_cmd"]


KEEPER = """
import sys
import llama_orchestrator.daemon.keeper as keeper
seen = []
keeper.run_keeper = lambda home, argv: seen.append(argv) or 0
from llama_orchestrator.cli.fast import try_daemon_run
code = try_daemon_run(sys.argv[1:])
heavy = ("typer", "click", "filelock", "psutil", "llama_orchestrator.cli.common")
print(code, seen[0][-6:] if seen else None, [m for m in heavy if m in sys.modules])
"""


def test_the_keeper_starts_without_the_cli(home: Home) -> None:
    """`daemon run`, the keeper every cold `up` starts and waits on, runs from the fast
    path: no Typer, no click, no command module, and neither filelock nor psutil before
    it has spawned the daemon."""

    def run(*args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-c", KEEPER, *args], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()

    root = str(home.root)
    expected = f"0 [{root!r}, 'daemon', 'run', '--worker', '--port', '5'] []"
    assert run("--home", root, "daemon", "run", "--port", "5") == expected
    assert run(f"--home={root}", "daemon", "run", "--port=5") == expected
    for other in (["daemon", "run", "--help"], ["daemon", "run", "--port", "x"], ["daemon"]):
        assert run(*other) == "None None []"


def test_the_keeper_lock_is_held_once(tmp_path: Path) -> None:
    from llama_orchestrator.daemon.keeper import _lock

    path = tmp_path / "keeper.lock"
    release = _lock(path)
    assert release is not None
    assert _lock(path) is None  # another keeper of this home
    release()
    again = _lock(path)
    assert again is not None
    again()
