"""``llama-orch config validate|lint|schema`` and ``llama-orch create`` (issue 2, parts 3-4).

Command bodies are glue: the checks live in ``config.lint``, the model in ``config.schema``.
Problems and messages go to stderr; the lint report and ``schema --output -`` to stdout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from llama_orchestrator.cli.common import (
    EXIT_FAIL,
    EXIT_USAGE,
    check_names,
    fail,
    home_of,
    require_known,
    say,
)
from llama_orchestrator.home import Home

if TYPE_CHECKING:
    from llama_orchestrator.doctor.lint import LintResult
    from llama_orchestrator.doctor.targets import Target

NamesArg = Annotated[list[str] | None, typer.Argument(help="Instance names.", show_default=False)]
AllOpt = Annotated[bool, typer.Option("--all", help="Every instance in the home.")]
FileOpt = Annotated[
    list[Path] | None,
    typer.Option("--file", help="A config file anywhere (repeatable).", show_default=False),
]


def resolve_targets(
    home: Home, names: list[str], all_: bool, files: list[Path], *, default_all: bool
) -> list[Target]:
    """The configs a command works on; exits 2 on a bad name, 1 on an unknown one."""
    from llama_orchestrator.doctor.targets import Target

    check_names(names)
    known = require_known(home, names)
    if not (names or all_ or files or default_all):
        fail("name one or more instances, or use --all or --file PATH", EXIT_USAGE)
    chosen = known if all_ or not (names or files) else names
    targets = [Target.of_instance(home, n) for n in chosen]
    targets += [Target.of_file(f) for f in files]
    unique: dict[Path, Target] = {}
    for t in targets:
        unique.setdefault(t.path.absolute(), t)
    return list(unique.values())


def _write_atomic(path: Path, text: str) -> None:
    from llama_orchestrator.fs import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text)


def _print_table(results: list[LintResult]) -> None:
    from rich.console import Console
    from rich.table import Table

    styles = {"ok": "green", "warning": "yellow", "error": "bold red"}
    table = Table(show_lines=False, box=None, pad_edge=False)
    table.add_column("INSTANCE", overflow="fold")
    table.add_column("CHECK", no_wrap=True)
    table.add_column("LEVEL", no_wrap=True)
    table.add_column("MESSAGE", overflow="fold")
    for r in results:
        table.add_row(r.instance, r.check, f"[{styles[r.level]}]{r.level}[/]", r.message)
    Console(highlight=False).print(table)


app = typer.Typer(
    name="config",
    help="Check instance configs and export their JSON Schema.",
    no_args_is_help=True,
)


@app.command()
def validate(
    ctx: typer.Context,
    names: NamesArg = None,
    all_: AllOpt = False,
    files: FileOpt = None,
) -> None:
    """Exit 0 when the configs can start; else print each problem as `file: field: ...`.

    Instances are checked with the home's gateway.json, when there is one.

    Examples: llama-orch config validate --all; llama-orch config validate --file x.json
    """
    from llama_orchestrator.doctor.lint import validate as run_validate

    home = home_of(ctx)
    targets = resolve_targets(home, names or [], all_, files or [], default_all=False)
    gateway = _with_gateway(home, names or [], all_)
    if not targets and not gateway:
        say(f"no instances in {home.instances_dir}")
        return
    problems = run_validate(home, targets, gateway=gateway)
    for p in problems:
        say(str(p))
    checked = len(targets) + gateway
    if problems:
        bad = len({p.file for p in problems})
        fail(f"{len(problems)} problem(s) in {bad} of {checked} config(s)", EXIT_FAIL)
    say(f"{checked} config(s) valid")


@app.command()
def lint(
    ctx: typer.Context,
    names: NamesArg = None,
    all_: Annotated[bool, typer.Option("--all", help="Every instance (the default).")] = False,
    files: FileOpt = None,
    fmt: Annotated[
        str, typer.Option("--format", help="table or json.", case_sensitive=False)
    ] = "table",
) -> None:
    """The full report: syntax, schema, model, binary, args, ports, GPU, log folder.

    The home's gateway.json, when there is one, is reported as "(gateway)": syntax,
    schema, API keys, its port against the instances', and whether the port is free;
    the home itself as "(home)": whether its state folder and token are private.

    Examples: llama-orch config lint; llama-orch config lint gemma --format json
    """
    from llama_orchestrator.doctor.lint import lint as run_lint

    fmt = fmt.lower()
    if fmt not in ("table", "json"):
        fail(f"--format must be 'table' or 'json', not {fmt!r}", EXIT_USAGE)
    home = home_of(ctx)
    targets = resolve_targets(home, names or [], all_, files or [], default_all=True)
    gateway = _with_gateway(home, names or [], all_ or not files)
    if not targets and not gateway:
        say(f"no instances in {home.instances_dir}")
        if fmt == "json":
            print("[]")
        return
    results = run_lint(
        home,
        targets,
        own_pids=_own_pids(home),
        daemon_pid=_daemon_pid(home),
        gateway=gateway,
        state=bool(names or all_ or not files),  # the home's own row, as for gateway.json
    )
    if fmt == "json":
        print(json.dumps([r.to_dict() for r in results], indent=2))
    elif results:
        _print_table(results)
    errors = sum(r.level == "error" for r in results)
    warnings = sum(r.level == "warning" for r in results)
    say(f"{len(targets) + gateway} config(s): {errors} error(s), {warnings} warning(s)")
    if errors:
        raise typer.Exit(EXIT_FAIL)


@app.command()
def schema(
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            help="Where to write it; '-' for stdout (default: llama-instance-schema.json, "
            "or llama-gateway-schema.json with --gateway). Without --gateway the gateway "
            "schema is also written beside it as llama-gateway-schema.json (not for '-').",
            show_default=False,
        ),
    ] = None,
    gateway: Annotated[
        bool,
        typer.Option(
            "--gateway",
            help="Only the schema of gateway.json, to --output (default "
            "llama-gateway-schema.json).",
        ),
    ] = False,
) -> None:
    """Write the JSON Schemas of instance configs and gateway.json (for editors, checks).

    Examples: llama-orch config schema; llama-orch config schema --gateway -o -
    """
    from llama_orchestrator.config.gateway import GATEWAY_SCHEMA_FILENAME, gateway_json_schema
    from llama_orchestrator.config.schema import SCHEMA_FILENAME, json_schema

    if gateway:
        writes = [(output or GATEWAY_SCHEMA_FILENAME, gateway_json_schema())]
    else:
        output = output or SCHEMA_FILENAME
        writes = [(output, json_schema())]
        if output != "-":
            beside = Path(output).absolute().with_name(GATEWAY_SCHEMA_FILENAME)
            if beside == Path(output).absolute():
                fail(f"--output {output} is the gateway schema's name; add --gateway", EXIT_USAGE)
            writes.append((str(beside), gateway_json_schema()))
    for where, document in writes:
        text = json.dumps(document, indent=2) + "\n"
        if where == "-":
            print(text, end="")
            continue
        path = Path(where).absolute()
        try:
            _write_atomic(path, text)
        except OSError as e:
            fail(f"cannot write {path}: {e.strerror or e}")
        say(f"wrote {path}")


def _with_gateway(home: Home, names: list[str], whole_home: bool) -> bool:
    """Check gateway.json too: it exists and the home's instances (not only files) are checked."""
    from llama_orchestrator.config.gateway import gateway_file_given

    return bool(names or whole_home) and gateway_file_given(home)


def _daemon_pid(home: Home) -> int | None:
    """The PID of this home's running daemon: the gateway port it holds is not foreign."""
    from llama_orchestrator.client.control import daemon_status

    status = daemon_status(home)
    return status.pid if status.running else None


def _own_pids(home: Home) -> dict[str, int]:
    """PIDs of this home's running servers, as recorded: their ports are not foreign."""
    from llama_orchestrator.state.db import StateStore

    store = StateStore.open_for_reading(home.db_path)
    if store is None:
        return {}
    try:
        return {r.name: r.pid for r in store.all() if r.pid}
    finally:
        store.close()
