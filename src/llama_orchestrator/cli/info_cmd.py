"""``llama-orch info``: where things live and which engine would run."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from llama_orchestrator.cli.common import home_of

app = typer.Typer()


@app.command()
def info(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show the home folder, its files, the daemon and the default llama-server."""
    from llama_orchestrator import __version__
    from llama_orchestrator.client.control import daemon_status
    from llama_orchestrator.engine.binary import resolve_binary

    home = home_of(ctx)
    status = daemon_status(home)
    try:
        binary = resolve_binary(None, home)
        engine: dict[str, str | None] = {
            "kind": binary.kind,
            "path": binary.display,
            "source": binary.source,
            "version": binary.version(),
        }
    except Exception as e:  # an unusable binary is shown, not raised
        engine = {"kind": None, "path": None, "source": None, "version": None, "error": str(e)}
    data = {
        "version": __version__,
        "home": str(home.root),
        "instances_dir": str(home.instances_dir),
        "state_db": str(home.db_path),
        "logs_dir": str(home.logs_dir),
        "bin_dir": str(home.bin_dir),
        "instances": home.instance_names(),
        "daemon": status.to_dict(),
        "engine": engine,
    }
    if as_json:
        print(json.dumps(data, indent=2))
        return
    print(f"llama-orch {__version__}")
    for key in ("home", "instances_dir", "state_db", "logs_dir", "bin_dir"):
        print(f"{key + ':':15}{data[key]}")
    print(f"{'instances:':15}{', '.join(home.instance_names()) or '-'}")
    daemon = f"running (pid {status.pid}, {status.url})" if status.running else "not running"
    print(f"{'daemon:':15}{daemon}")
    if engine.get("path"):
        version = engine["version"] or ""
        print(f"{'llama-server:':15}{engine['path']} [{engine['source']}] {version}")
    else:
        print(f"{'llama-server:':15}unavailable: {engine.get('error')}")
