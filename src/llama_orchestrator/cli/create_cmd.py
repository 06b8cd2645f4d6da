"""``llama-orch create``: write a new instance's config, never over an existing one.

The checks live in ``doctor`` (model file, ports) and ``config.schema`` (the model);
this module is glue. Problems and messages go to stderr.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from llama_orchestrator.cli.common import EXIT_FAIL, EXIT_USAGE, check_names, fail, home_of, say
from llama_orchestrator.home import Home

app = typer.Typer()


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
    check_names([name])
    home = home_of(ctx)
    if remote is not None:
        local = {"--model": model, "--port": port, "--host": host, "--ctx": ctx_size}
        local |= {"--threads": threads, "--template": template}
        given = [flag for flag, v in local.items() if v is not None]
        if given:
            verb = "does" if len(given) == 1 else "do"
            fail(f"{', '.join(given)} {verb} not apply with --remote", EXIT_USAGE)
        _create_remote(home, name, remote, api_key_env)
        return
    if api_key_env is not None:
        fail("--api-key-env goes with --remote URL (a local server's key is in its env)", 2)
    if model is None:
        fail("give --model FILE (or --remote URL for a server another machine runs)", 2)
    _check_ranges(ctx_size, threads, port)
    _create_local(home, name, model, host, port, ctx_size, threads, template)


def _create_remote(home: Home, name: str, remote: str, api_key_env: str | None) -> None:
    remote = remote.strip()
    remote = remote[:-1] if remote.endswith("/") and remote.count("/") == 3 else remote
    cfg: dict[str, Any] = {"url": remote}
    if api_key_env is not None:
        cfg["api_key_env"] = api_key_env
    _create_checked(home, name, {"name": name, "remote": cfg}, f"remote {remote}")


def _template_overlay(home: Home, template: str | None) -> dict[str, Any]:
    """The named template's overlay ({}: none named); exits on an unknown or broken one."""
    if template is None:
        return {}
    from llama_orchestrator.templates import TemplateError, get_template

    try:
        return get_template(home, template).overlay
    except TemplateError as e:
        # Unknown name: a bad option value (usage, 2); a broken file: failure (1).
        fail(str(e), EXIT_USAGE if str(e).startswith("unknown") else EXIT_FAIL)


def _create_local(
    home: Home,
    name: str,
    model: Path,
    host: str | None,
    port: int | None,
    ctx_size: int | None,
    threads: int | None,
    template: str | None,
) -> None:
    from llama_orchestrator.doctor.modelfile import model_file_problem

    overlay = _template_overlay(home, template)
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
            {k: v for k, v in (("context_size", ctx_size), ("threads", threads)) if v is not None}
        )
    via = f", template {template}" if template else ""
    _create_checked(home, name, data, f"port {chosen}{via}")


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
