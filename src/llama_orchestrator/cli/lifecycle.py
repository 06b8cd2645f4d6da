"""``up``, ``down``, ``restart`` (through the daemon) and ``ps`` (from the records)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Annotated, Any

import typer

from llama_orchestrator.cli.common import (
    EXIT_FAIL,
    EXIT_USAGE,
    check_names,
    daemon_client,
    fail,
    home_of,
    http_url,
    one_line,
    require_known,
    say,
)
from llama_orchestrator.home import Home

if TYPE_CHECKING:
    from llama_orchestrator.client.control import Client

NamesArg = Annotated[list[str] | None, typer.Argument(help="Instance names.", show_default=False)]
AllOpt = Annotated[bool, typer.Option("--all", "-a", help="Every defined instance.")]


def _targets(
    home: Home, names: list[str] | None, all_: bool, *, records: bool = False
) -> list[str]:
    """The instances a command acts on; unknown names fail before anything happens.

    With ``records``, an instance whose folder was removed but whose record remains
    counts too (it may still run: `down` and `rm` must reach it; issue 10).
    """
    recorded = _recorded(home) if records else {}
    if all_:
        if names:
            fail("give instance names or --all, not both", EXIT_USAGE)
        found = home.instance_names()
        return found + sorted(n for n, pid in recorded.items() if pid and n not in found)
    if not names:
        fail("name at least one instance, or use --all", EXIT_USAGE)
    check_names(names)
    missing = [n for n in names if n not in recorded]
    if missing:
        require_known(home, missing)
    return list(dict.fromkeys(names))


def _recorded(home: Home) -> dict[str, int | None]:
    """name -> recorded pid of every instance the state store knows."""
    from llama_orchestrator.state.db import StateStore

    store = StateStore.open_for_reading(home.db_path)
    if store is None:
        return {}
    try:
        return {r.name: r.pid for r in store.all()}
    finally:
        store.close()


def _validate(client: Client, names: list[str]) -> None:
    """Refuse to act when any config is invalid: every problem, one per line, exit 1.

    The daemon validates (it has the config model loaded already), so the CLI does not
    pay for importing it on every `up`.
    """
    try:
        reply = client.post("/v1/validate", params={"names": ",".join(names)})
    except OSError as e:
        fail(f"lost the daemon ({e}); see {client.url} and logs/daemon.log")
    if not reply.ok or not isinstance(reply.body, dict):
        fail(f"the daemon could not validate the configs: {reply.body}")
    problems: list[str] = reply.body["problems"]
    if problems:
        for line in problems:
            say(line)
        fail(f"{len(problems)} config problem(s); nothing was started or stopped")


def _client(home: Home) -> Client:
    return daemon_client(home)


def _report(name: str, body: dict[str, Any], verb: str) -> bool:
    if body.get("recreated"):
        say(f"{name}: its config changed since it started: recreated (stopped, then started)")
    if body.get("ok"):
        msg = body.get("message", "")
        inst = body.get("instance") or {}
        if body.get("ready_ms") is not None:
            where = http_url(inst.get("host"), inst.get("port"))
            made_room = msg[len("ready ") :] if msg.startswith("ready (") else ""
            who = f"pid {body['pid']}" if body.get("pid") else "remote"  # issue 13: no PID
            say(
                f"{name}: ready in {body['ready_ms'] / 1000:.2f}s "
                f"({who}, {where}){' ' + made_room if made_room else ''}"
            )
        else:
            say(f"{name}: {msg or verb}")
        return True
    message = str(body.get("message") or body.get("detail"))
    if body.get("error") != "config_invalid":  # config problems come one per line
        message = one_line(message)
    say(f"error: {name}: {message}")
    tail = body.get("stderr_tail") or []
    if tail:
        say(f"--- last lines of {name}'s stderr ---")
        for line in tail:
            say(f"  {line}")
    return False


def _act(client: Client, names: list[str], path: str, verb: str, **params: Any) -> bool:
    def one(name: str) -> tuple[str, dict[str, Any]]:
        try:
            r = client.post(f"/v1/instances/{name}/{path}", params=params)
        except OSError as e:  # the daemon died or was stopped mid-request
            return name, {"ok": False, "message": f"lost the daemon while waiting ({e})"}
        body = r.body
        if not isinstance(body, dict):
            body = {"ok": False, "message": f"HTTP {r.status}: {str(body)[:200]}"}
        elif "ok" not in body:
            body = {"ok": False, "message": body.get("detail") or f"HTTP {r.status}"}
        return name, body

    ok = True
    with ThreadPoolExecutor(max_workers=min(8, max(1, len(names)))) as pool:
        for name, body in pool.map(one, names):
            ok = _report(name, body, verb) and ok
    return ok


app = typer.Typer()


@app.command(short_help="Start instances and wait until each is healthy (alias: start).")
def up(
    ctx: typer.Context,
    names: NamesArg = None,
    all_: AllOpt = False,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Return at once; do not wait for ready.")
    ] = False,
    no_recreate: Annotated[
        bool,
        typer.Option(
            "--no-recreate", help="Keep a running instance whose config changed as it is."
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="Start past gateway.json's budgets (max_running, memory)."),
    ] = False,
) -> None:
    """Start instances and wait until each answers /health with 200.

    A running instance whose config changed since it started is recreated (stopped,
    then started with the new config) unless --no-recreate. Under gateway.json's
    budgets, idle instances are stopped to make room (it says which); a start that
    would have to wait for busy ones waits; --force goes past the budgets knowingly.
    `llama-orch start` is the same command.

    Examples: llama-orch up gemma; llama-orch up --all --detach
    """
    home = home_of(ctx)
    targets = _targets(home, names, all_)
    if not targets:
        say("no instances defined; create one with `llama-orch create`")
        return
    client = _client(home)
    _validate(client, targets)
    params = {"wait": not detach, "recreate": not no_recreate, "force": force}
    if not _act(client, targets, "start", "starting", **params):
        raise typer.Exit(EXIT_FAIL)


@app.command(short_help="Stop instances gracefully, then kill them (alias: stop).")
def down(ctx: typer.Context, names: NamesArg = None, all_: AllOpt = False) -> None:
    """Stop instances (graceful signal, then kill after server.stop_timeout).

    `llama-orch stop` is the same command.

    Examples: llama-orch down gemma; llama-orch down --all
    """
    from llama_orchestrator.client.control import daemon_status

    home = home_of(ctx)
    targets = _targets(home, names, all_, records=True)
    if not targets:
        return
    if not daemon_status(home).running and not _any_recorded_alive(home, targets):
        for name in targets:
            say(f"{name}: already stopped")
        return
    if not _act(_client(home), targets, "stop", "stopped"):
        raise typer.Exit(EXIT_FAIL)


# As Docker and pm2 users type them (issue 10); kept out of the list, named in its help.
app.command("start", hidden=True)(up)
app.command("stop", hidden=True)(down)


@app.command()
def restart(ctx: typer.Context, names: NamesArg = None, all_: AllOpt = False) -> None:
    """Stop and start instances with their current config.

    Examples: llama-orch restart gemma; llama-orch restart --all
    """
    home = home_of(ctx)
    targets = _targets(home, names, all_)
    client = _client(home)
    _validate(client, targets)
    if not _act(client, targets, "restart", "restarted"):
        raise typer.Exit(EXIT_FAIL)


@app.command()
def rm(
    ctx: typer.Context,
    names: NamesArg = None,
    force: Annotated[
        bool, typer.Option("--force", "-f", help="Stop a running instance first.")
    ] = False,
    logs: Annotated[bool, typer.Option("--logs", help="Remove its log files too.")] = False,
) -> None:
    """Remove instances: their folders and records (logs are kept unless --logs).

    A running instance is refused unless --force, which stops it first.
    Examples: llama-orch rm old-model; llama-orch rm --force --logs scratch
    """
    home = home_of(ctx)
    targets = _targets(home, names, False, records=True)
    client = _client(home)
    ok = True
    for name in targets:
        try:
            r = client.request(
                "DELETE", f"/v1/instances/{name}", params={"force": force, "logs": logs}
            )
        except OSError as e:
            fail(f"lost the daemon ({e})")
        body = r.body if isinstance(r.body, dict) else {"ok": False, "message": str(r.body)}
        ok = _report(name, body, "removed") and ok
    if not ok:
        raise typer.Exit(EXIT_FAIL)


@app.command()
def ps(
    ctx: typer.Context,
    all_: Annotated[bool, typer.Option("--all", "-a", help="Include stopped instances.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Names only.")] = False,
    filters: Annotated[
        list[str] | None,
        typer.Option(
            "--filter",
            "-f",
            help="KEY=VALUE with KEY one of name, status, health, backend, device, desired; "
            "repeatable.",
        ),
    ] = None,
) -> None:
    """List instances: NAME PID PORT BACKEND DEVICE MODEL STATUS HEALTH UPTIME RESTARTS.

    Works from the records when the daemon is down (and says so).
    Examples: llama-orch ps -a; llama-orch ps --filter status=backoff --json
    """
    from llama_orchestrator.cli.ps_view import run_ps

    code = run_ps(home_of(ctx), all_=all_, as_json=as_json, quiet=quiet, filters=filters or [])
    if code:
        raise typer.Exit(code)


def _any_recorded_alive(home: Home, names: list[str]) -> bool:
    from llama_orchestrator.state.db import StateStore

    store = StateStore.open_for_reading(home.db_path)
    if store is None:
        return False
    try:
        return any(store.record(n).pid for n in names)
    finally:
        store.close()
