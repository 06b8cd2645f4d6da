"""``llama-orch config validate|lint|schema`` and ``llama-orch create`` (issue 2, parts 3-4).

Command bodies are glue: the checks live in ``config.lint``, the model in ``config.schema``.
Problems and messages go to stderr; the lint report and ``schema --output -`` to stdout.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

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


def _create_exclusive(path: Path, text: str) -> bool:
    """Write ``path`` atomically unless it exists; False (nothing changed) when it does.

    The file appears complete or not at all; a hard link refuses to replace a file that
    another ``create`` wrote meanwhile, where ``os.replace`` would overwrite it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links
            if path.exists():
                return False
            os.replace(tmp, path)
        return True
    finally:
        tmp.unlink(missing_ok=True)


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


def _build_config(
    name: str, model: Path, host: str, port: int, ctx: int, threads: int
) -> dict[str, Any]:
    return {
        "name": name,
        "model": {"path": str(model), "context_size": ctx, "threads": threads},
        "server": {"host": host, "port": port},
        "gpu": {"backend": "cpu", "device_id": 0, "layers": 0},
    }


def _check_ranges(ctx_size: int | None, threads: int | None, port: int | None) -> None:
    """Exit 2 naming the option and its range when a given number is out of it (issue 10).

    Checked before anything else: ``--ctx 0`` once fell through ``x or default`` to the
    default without a word.
    """
    from llama_orchestrator.config.schema import ModelConfig, ServerConfig, int_bounds

    for option, value, model, field, section in (
        ("--ctx", ctx_size, ModelConfig, "context_size", "model"),
        ("--threads", threads, ModelConfig, "threads", "model"),
        ("--port", port, ServerConfig, "port", "server"),
    ):
        if value is None:
            continue
        low, high = int_bounds(model, field)
        if not low <= value <= high:
            fail(
                f"{option} {value} is out of range: use {low} to {high} ({section}.{field})",
                EXIT_USAGE,
            )


def _choose_port(home: Home, name: str, host: str, port: int | None) -> int:
    from llama_orchestrator.doctor.portcheck import (
        configured_endpoints,
        effective_gateway,
        hosts_overlap,
    )
    from llama_orchestrator.doctor.ports import find_free_port, port_holder

    claimed = configured_endpoints(home, skip=name)
    gateway = effective_gateway(home)
    gateway_port = {gateway.port} if gateway is not None else set()
    if port is None:
        try:
            taken = {p for _, p in claimed.values()} | gateway_port
            return find_free_port(host, 8001, taken=taken)
        except OSError as e:
            fail(f"cannot choose a free port on {host}: {e.strerror or e}; pass --port")
    if port in gateway_port:
        fail(f"port {port} is the gateway's port (see {home.gateway_path}); pick another --port")
    for other, (other_host, other_port) in claimed.items():
        if other_port == port and hosts_overlap(host, other_host):
            fail(f"port {port} is already used by instance {other!r} ({other_host}:{port})")
    try:
        holder = port_holder(host, port)
    except OSError:
        holder = None  # the lint reports it; the config itself is still valid
    if holder is not None:
        say(f"warning: {host}:{port} is held right now by {holder}")
    return port


def register(app: typer.Typer) -> None:
    config_app = typer.Typer(
        name="config",
        help="Check instance configs and export their JSON Schema.",
        no_args_is_help=True,
    )
    app.add_typer(config_app, name="config")

    @config_app.command()
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

    @config_app.command()
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

    @config_app.command()
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
                    fail(
                        f"--output {output} is the gateway schema's name; add --gateway", EXIT_USAGE
                    )
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

    @app.command()
    def create(
        ctx: typer.Context,
        name: Annotated[str, typer.Argument(help="Instance name, e.g. gemma-2b.")],
        model: Annotated[
            Path | None, typer.Option("--model", "-m", help="The GGUF model file.")
        ] = None,
        port: Annotated[
            int | None, typer.Option("--port", help="Default: the first free port from 8001.")
        ] = None,
        host: Annotated[
            str | None,
            typer.Option("--host", help="Address to listen on (default: 127.0.0.1)."),
        ] = None,
        ctx_size: Annotated[
            int | None, typer.Option("--ctx", help="Context size in tokens (default: 4096).")
        ] = None,
        threads: Annotated[
            int | None, typer.Option("--threads", help="CPU threads (default: min(8, CPUs)).")
        ] = None,
        template: Annotated[
            str | None,
            typer.Option(
                "--template",
                help="Defaults for a backend: cpu, vulkan, cuda, metal, or one of yours "
                "(llama-orch templates). Options given here override it.",
            ),
        ] = None,
        remote: Annotated[
            str | None,
            typer.Option("--remote", help="A server another machine runs: its URL, no model."),
        ] = None,
        api_key_env: Annotated[
            str | None,
            typer.Option("--api-key-env", help="With --remote: the variable holding its key."),
        ] = None,
    ) -> None:
        """Write instances/NAME/config.json for a model; never overwrites an existing one.

        An unknown --template exits 2 (a usage error) and lists the templates there are.

        Examples: llama-orch create gemma --model ../models/gemma-270m.gguf --port 8002;
        llama-orch create big --model big.gguf --template vulkan;
        llama-orch create far --remote http://10.0.0.7:8080 --api-key-env FAR_KEY
        """
        from llama_orchestrator.doctor.modelfile import model_file_problem

        check_names([name])
        home = home_of(ctx)
        if remote is not None:
            local = {"--model": model, "--port": port, "--host": host, "--ctx": ctx_size}
            local |= {"--threads": threads, "--template": template}
            given = [flag for flag, v in local.items() if v is not None]
            if given:
                verb = "does" if len(given) == 1 else "do"
                fail(f"{', '.join(given)} {verb} not apply with --remote", EXIT_USAGE)
            remote = remote.strip()
            remote = remote[:-1] if remote.endswith("/") and remote.count("/") == 3 else remote
            cfg: dict[str, Any] = {"url": remote}
            if api_key_env is not None:
                cfg["api_key_env"] = api_key_env
            data: dict[str, Any] = {"name": name, "remote": cfg}
            _create_checked(home, name, data, f"remote {remote}")
            return
        if api_key_env is not None:
            fail("--api-key-env goes with --remote URL (a local server's key is in its env)", 2)
        if model is None:
            fail("give --model FILE (or --remote URL for a server another machine runs)", 2)
        _check_ranges(ctx_size, threads, port)
        overlay: dict[str, Any] = {}
        if template is not None:
            from llama_orchestrator.templates import TemplateError, get_template

            try:
                overlay = get_template(home, template).overlay
            except TemplateError as e:
                # Unknown name: a bad option value (usage, 2); a broken file: failure (1).
                fail(str(e), EXIT_USAGE if str(e).startswith("unknown") else EXIT_FAIL)
        path = home.config_path(name)
        if path.exists():
            fail(f"instance {name!r} already exists ({path}); edit it or pick another name")
        # Absolute from the CWD: the config lives elsewhere, and the path the user typed
        # must keep meaning the same file.
        model_path = Path(os.path.abspath(model.expanduser()))
        reason = model_file_problem(model_path)
        if reason:
            fail(f"model {model_path} {reason}")
        t_model, t_server = overlay.get("model", {}), overlay.get("server", {})
        host = host or t_server.get("host") or "127.0.0.1"
        chosen = _choose_port(home, name, host, port)
        data = _build_config(
            name,
            model_path,
            host,
            chosen,
            ctx_size if ctx_size is not None else t_model.get("context_size", 4096),
            threads if threads is not None else t_model.get("threads", min(8, os.cpu_count() or 1)),
        )
        if overlay:
            from llama_orchestrator.templates import merge

            # create's defaults < the template < the options given on the command line
            data = merge(data, overlay)
            data["server"]["host"] = host
            data["model"].update(
                {
                    k: v
                    for k, v in (("context_size", ctx_size), ("threads", threads))
                    if v is not None
                }
            )
        via = f", template {template}" if template else ""
        _create_checked(home, name, data, f"port {chosen}{via}")


def _create_checked(home: Home, name: str, data: dict[str, Any], what: str) -> None:
    """Validate ``data`` as a config and write it, never over an existing one."""
    from pydantic import ValidationError

    from llama_orchestrator.config.loader import problems_from_validation
    from llama_orchestrator.config.schema import InstanceConfig

    path = home.config_path(name)
    try:
        InstanceConfig.model_validate(data)
    except ValidationError as e:
        for p in problems_from_validation("(options)", e):
            say(str(p))
        fail("the options do not make a valid config", EXIT_USAGE)
    if not _create_exclusive(path, json.dumps(data, indent=2) + "\n"):
        fail(f"instance {name!r} already exists ({path}); edit it or pick another name")
    say(f"created {path} ({what})")


def _with_gateway(home: Home, names: list[str], whole_home: bool) -> bool:
    """Check gateway.json too: it exists and the home's instances (not only files) are checked."""
    return bool(names or whole_home) and home.gateway_path.exists()


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
        return {r["name"]: int(r["pid"]) for r in store.all() if r.get("pid")}
    finally:
        store.close()
