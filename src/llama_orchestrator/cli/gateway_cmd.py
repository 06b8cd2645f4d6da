"""``llama-orch gateway status``: the OpenAI-compatible endpoint the daemon serves."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from llama_orchestrator.cli.common import fail, home_of, say


def _from_records(home: Any) -> dict[str, Any]:
    """The last status the daemon recorded (for when it is not running)."""
    from llama_orchestrator.state.db import StateStore

    store = StateStore.open_for_reading(home.db_path)
    raw = store.meta_get("gateway") if store is not None else None
    if store is not None:
        store.close()
    last = json.loads(raw) if raw else {}
    return {
        "url": last.get("url"),
        "listening": False,
        "reason": "the daemon is not running",
        "keys": last.get("keys", 0),
        "routes": {},
        "in_flight": {},
        "queued": {},
    }


def _print(status: dict[str, Any]) -> None:
    if status.get("listening"):
        print(f"listening on {status['url']}")
    else:
        where = f" on {status['url']}" if status.get("url") else ""
        print(f"not listening{where}: {status.get('reason') or 'unknown reason'}")
    keys = int(status.get("keys") or 0)
    print(f"api keys: {keys}" if keys else "api keys: none (no key needed)")
    routes: dict[str, list[str]] = status.get("routes") or {}
    in_flight: dict[str, int] = status.get("in_flight") or {}
    queued: dict[str, int] = status.get("queued") or {}
    if routes:
        print("routes:")
        width = max(len(n) for n in routes)
        for name, members in routes.items():
            load = ", ".join(f"{m} ({in_flight.get(m, 0)} in flight)" for m in members)
            wait = f", {queued[name]} queued" if queued.get(name) else ""
            print(f"  {name:<{width}}  -> {load}{wait}")


app = typer.Typer(
    help="The OpenAI-compatible gateway the daemon serves in front of every instance.",
    no_args_is_help=True,
)


@app.command()
def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """URL, listening or why not, keys configured, routes and requests in flight.

    Exit 0 when the gateway listens, 1 when it does not.

    Examples: llama-orch gateway status; llama-orch gateway status --json | jq .routes
    """
    from llama_orchestrator.client.control import DaemonError, connect

    home = home_of(ctx)
    try:
        client = connect(home)
    except DaemonError as e:
        fail(str(e))
    info: dict[str, Any] | None = None
    if client is not None:
        try:
            reply = client.get("/v1/gateway")
            if reply.ok and isinstance(reply.body, dict):
                info = reply.body
        except (OSError, DaemonError):
            info = None
    if info is None:
        info = _from_records(home)
        if not as_json:
            say("the daemon is not running: `llama-orch up` starts it, and the gateway with it")
    if as_json:
        print(json.dumps(info))
    else:
        _print(info)
    raise typer.Exit(0 if info.get("listening") else 1)
