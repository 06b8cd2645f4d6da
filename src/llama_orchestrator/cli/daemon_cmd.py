"""``llama-orch daemon start|stop|status|run``."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from llama_orchestrator.cli.common import daemon_client, fail, home_of, say

app = typer.Typer(
    help="The supervisor daemon that owns every instance (started on demand by `up`).",
    no_args_is_help=True,
)


@app.command()
def start(ctx: typer.Context) -> None:
    """Start the daemon in the background (no-op when it already runs)."""
    from llama_orchestrator.client.control import DaemonError, daemon_status, ensure_daemon

    home = home_of(ctx)
    try:
        _client, started = ensure_daemon(home)
    except DaemonError as e:
        fail(str(e))
    st = daemon_status(home)
    say(f"daemon {'started' if started else 'already running'} (pid {st.pid}, {st.url})")
    if started:
        from llama_orchestrator.state.recover import recovery_notice

        notice = recovery_notice(home.db_path, st.pid)
        if notice:
            say(f"note: {notice}")


@app.command()
def stop(ctx: typer.Context) -> None:
    """Stop the daemon. Instances keep running; the next daemon re-adopts them."""
    from llama_orchestrator.client.control import stop_daemon

    say("daemon stopped" if stop_daemon(home_of(ctx)) else "daemon is not running")


@app.command()
def reload(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Rescan instances/ and gateway.json now (as SIGHUP does; the daemon also looks
    every 2 s). Unchanged instances are left alone; changed ones keep running until
    `up` recreates them. Exit 1 when a config or gateway.json is invalid (or refused).
    """
    client = daemon_client(home_of(ctx))
    try:
        reply = client.post("/v1/daemon/reload")
    except OSError as e:
        fail(f"lost the daemon ({e}); see logs/daemon.log")
    body = reply.body
    if not reply.ok or not isinstance(body, dict):
        fail(f"the daemon could not reload: {body}")
    if as_json:
        print(json.dumps(body))
    else:
        _say_reload(body)
    if body.get("invalid") or body.get("gateway") in ("invalid", "refused"):
        raise typer.Exit(1)


@app.command()
def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show whether the daemon runs. Exit 0 when it does, 1 when it does not."""
    from llama_orchestrator.client.control import daemon_status, keeper_alive

    st = daemon_status(home_of(ctx))
    if as_json:
        print(json.dumps(st.to_dict()))
    elif st.running:
        print(f"running (pid {st.pid}, {st.url})")
    elif keeper_alive(home_of(ctx)):  # between a crash and the restart (daemon/keeper.py)
        print("not running: its keeper is starting it again")
    else:
        print("not running" + (" (stale pid file)" if st.stale_pid_file else ""))
    raise typer.Exit(0 if st.running else 1)


@app.command()
def run(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="Control API port (0 = any free port).")] = 0,
    worker: Annotated[bool, typer.Option("--worker", hidden=True)] = False,
) -> None:
    """Run the daemon in the foreground (what the OS service runs), under a small
    keeper process that starts it again within a second if it dies."""
    home = home_of(ctx)
    if worker:
        from llama_orchestrator.daemon.server import run_daemon

        raise typer.Exit(run_daemon(home, port=port))
    import sys

    from llama_orchestrator.daemon.keeper import run_keeper

    argv = [sys.executable, "-m", "llama_orchestrator", "--home", str(home.root)]
    argv += ["daemon", "run", "--worker", "--port", str(port)]
    raise typer.Exit(run_keeper(home, argv))


def _say_reload(body: dict[str, Any]) -> None:
    say(f"reloaded {body['instances']} instance configs")
    for key, label in (("added", "added"), ("changed", "changed"), ("removed", "removed")):
        if body.get(key):
            say(f"  {label}: {', '.join(body[key])}")
    for name, problem in (body.get("invalid") or {}).items():
        say(f"  invalid: {name}: {problem}")  # it says whether a last good one is in force
    for name in body.get("drifted") or []:
        say(f"  {name}: runs an older config; `llama-orch up {name}` recreates it")
    outcome = body.get("gateway")
    if outcome in ("invalid", "refused"):
        say(
            f"  gateway.json: {outcome}; the gateway keeps its settings "
            "(`llama-orch config validate` shows why)"
        )
    elif outcome:
        say(f"  gateway.json: {outcome}")
