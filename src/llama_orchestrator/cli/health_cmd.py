"""``llama-orch health NAME``: health state, the last checks and the failure streak."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer

from llama_orchestrator.cli.common import check_names, fail, home_of, require_known, say
from llama_orchestrator.engine.states import State
from llama_orchestrator.home import Home


def _from_records(home: Home, name: str) -> dict[str, Any]:
    from llama_orchestrator.state.db import StateStore
    from llama_orchestrator.state.records import InstanceRecord

    store = StateStore.open_for_reading(home.db_path)
    record = InstanceRecord.absent(name)
    if store is not None:
        try:
            record = store.record(name)
        finally:
            store.close()
    return {
        "never_started": not record.start_time,
        "name": name,
        "status": record.status,
        "health": record.health,
        "consecutive_failures": None,
        "last_health_check": record.last_health_check,
        "checks": [],
        "live": False,
    }


app = typer.Typer()


@app.command()
def health(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Instance name.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show an instance's health: state, last checks with latency, failure streak.

    Examples: llama-orch health gemma; llama-orch health gemma --json | jq .checks
    """
    from llama_orchestrator.client.control import DaemonError, connect

    check_names([name])
    home = home_of(ctx)
    require_known(home, [name])
    try:
        client = connect(home)
    except DaemonError as e:
        fail(str(e))
    data: dict[str, Any]
    reply = None
    if client is not None:
        try:
            reply = client.get(f"/v1/instances/{name}/health", timeout=10)
        except OSError:
            reply = None
    if reply is not None and reply.ok and isinstance(reply.body, dict):
        data = dict(reply.body, live=True)
    else:
        say("note: the daemon is not running; showing the last recorded health")
        data = _from_records(home, name)
    if as_json:
        print(json.dumps(data, indent=2))
        return
    live_never = data["status"] == State.STOPPED and not data.get("last_health_check")
    if data.get("never_started") or (data.get("live") and live_never):
        say(f"{name} has not been started yet: no health checks")
    for line in render_health(name, data):
        print(line)


def render_health(name: str, data: dict[str, Any]) -> list[str]:
    """``health``'s text: a "Last check" line only when there was one (issue 10)."""
    out = [
        f"{'Name:':22}{name}",
        f"{'Status:':22}{data['status']}",
        f"{'Health:':22}{data['health']}",
    ]
    if data.get("consecutive_failures") is not None:
        retries = data.get("retries")
        streak = f"{data['consecutive_failures']}" + (f" of {retries}" if retries else "")
        out.append(f"{'Consecutive failures:':22}{streak}")
    last = data.get("last_health_check")
    if last:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last))
        out.append(f"{'Last check:':22}{when}")
    checks = data.get("checks") or []
    if not checks:
        if data.get("live"):
            # the daemon keeps the checks in memory: a new one has none of the old ones
            none = (
                "none kept yet (the daemon keeps them in memory; the next comes within "
                "the interval)"
                if last
                else "none yet"
            )
            out.append(f"{'Checks:':22}{none}")
        return out
    out.append("Checks (oldest first):")
    for c in checks:
        stamp = time.strftime("%H:%M:%S", time.localtime(c["ts"]))
        code = c["status_code"] if c["status_code"] is not None else "-"
        mark = "ok  " if c["ok"] else "FAIL"
        out.append(
            f"  {stamp}  {c['kind']:<10} {mark} {code!s:>4} {c['latency_ms']:8.1f} ms  "
            f"{c['detail']}"[:120]
        )
    return out
