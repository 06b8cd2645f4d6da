"""``llama-orch events``: what happened to the instances, like ``docker events``.

Without ``--follow`` the recorded events are printed from the state store (no daemon
needed; request events are not recorded, only streamed). With ``--follow`` the daemon's
``GET /v1/events`` stream is printed as it arrives, starting with a snapshot line per
instance, until Ctrl-C. One line per event (time, instance, kind, old -> new, reason), or
one JSON object per line with ``--json``. ``--logs NAME`` follows (``-f`` implied) and
adds that instance's log lines as they are written (``--kinds log``: only them).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any

import typer

from llama_orchestrator.cli.common import (
    EXIT_USAGE,
    check_names,
    daemon_client,
    fail,
    home_of,
    quiet_exit,
    say,
)
from llama_orchestrator.home import Home

if TYPE_CHECKING:
    from llama_orchestrator.client.control import Client

READ_TIMEOUT_S = 60.0  # the daemon sends a keep-alive every 15 s; silence past this is a loss


def split(values: list[str] | None) -> list[str]:
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]


LOG_KIND = "log"  # a line of ``--logs NAME`` (not recorded, only streamed)


def check_kinds(kinds: list[str], logs: str | None = None) -> None:
    from llama_orchestrator.daemon.events import EventKind

    valid = [k.value for k in EventKind] + [LOG_KIND]
    wrong = [k for k in kinds if k not in valid]
    if wrong:
        fail(
            f"unknown event kind {', '.join(repr(w) for w in wrong)}; "
            f"valid kinds: {', '.join(valid)}",
            EXIT_USAGE,
        )
    if LOG_KIND in kinds and logs is None:
        fail("--kinds log needs --logs NAME (whose log lines?)", EXIT_USAGE)


def render(event: dict[str, Any]) -> str:
    """``2025-06-01T12:00:00.123 alpha state stopped -> starting (up requested)``."""
    ts = event.get("ts") or time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(ts)) + f".{int(ts % 1 * 1000):03d}"
    name = event.get("instance") or "daemon"
    kind = str(event.get("kind"))
    parts = [stamp, name, kind]
    if kind == LOG_KIND:
        parts.append(f"{event.get('stream')}| {event.get('line', '')}")
        return " ".join(parts).replace("\n", "\\n")
    if kind == "snapshot":
        parts.append(f"{event.get('state')} health={event.get('health')}")
        if event.get("pid"):
            parts.append(f"pid={event['pid']}")
    elif kind in ("dropped", "end"):
        pass
    else:
        old, new = event.get("old"), event.get("new")
        if old is not None or new is not None:
            parts.append(f"{old or '-'} -> {new or '-'}")
    if event.get("reason"):
        parts.append(f"({event['reason']})")
    return " ".join(parts).replace("\n", "\\n")


def recorded(home: Home, names: list[str], kinds: list[str], limit: int) -> list[dict[str, Any]]:
    from llama_orchestrator.state.db import StateStore

    store = StateStore.open_for_reading(home.db_path)
    if store is None:
        return []
    fetch = limit if not kinds else max(limit * 20, 5000)
    try:
        rows = (
            [r for n in names for r in store.events(n, fetch)]
            if names
            else store.events(None, fetch)
        )
    finally:
        store.close()
    rows.sort(key=lambda r: r["id"])
    out = [
        {
            "instance": r["name"],
            "kind": r["kind"],
            "old": r["old"],
            "new": r["new"],
            "reason": r["reason"],
            "ts": r["ts"],
        }
        for r in rows
        if not kinds or r["kind"] in kinds
    ]
    return out[-limit:]


def sse_events(lines: Iterator[bytes]) -> Iterator[dict[str, Any]]:
    """The ``data`` of each Server-Sent Event, decoded; comments are skipped."""
    data: list[str] = []
    for raw in lines:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data:
                yield json.loads("\n".join(data))
                data = []
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


def follow(
    client: Client, names: list[str], kinds: list[str], logs: str | None = None, tail: int = 0
) -> Iterator[dict[str, Any]]:
    import http.client
    from urllib.parse import urlencode

    query = urlencode(
        [("instance", ",".join(names))] * bool(names)
        + [("kinds", ",".join(kinds))] * bool(kinds)
        + ([("logs", logs), ("tail", str(tail))] if logs is not None else [])
    )
    conn = http.client.HTTPConnection(client.host, client.port, timeout=READ_TIMEOUT_S)
    try:
        conn.request(
            "GET",
            "/v1/events" + (f"?{query}" if query else ""),
            headers={"Authorization": f"Bearer {client.token}", "Accept": "text/event-stream"},
        )
        resp = conn.getresponse()
        if resp.status != 200:
            body = resp.read().decode("utf-8", "replace")
            try:
                detail = json.loads(body).get("detail", body)
            except (ValueError, AttributeError):
                detail = body
            fail(f"the daemon answered {resp.status}: {detail}")
        yield from sse_events(iter(resp.readline, b""))
    finally:
        conn.close()


app = typer.Typer()


@app.command()
def events(
    ctx: typer.Context,
    follow_: Annotated[
        bool, typer.Option("--follow", "-f", help="Follow the live stream until Ctrl-C.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    instance: Annotated[
        list[str] | None,
        typer.Option("--instance", help="Only this instance (repeat, or a,b)."),
    ] = None,
    kinds: Annotated[
        list[str] | None,
        typer.Option("--kinds", help="Only these kinds: state, health, exit... (a,b)."),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, help="Recorded events shown (no -f).")
    ] = 50,
    logs: Annotated[
        str | None,
        typer.Option("--logs", metavar="NAME", help="Also NAME's log lines (implies -f)."),
    ] = None,
    tail: Annotated[
        int, typer.Option("--tail", min=0, max=10_000, help="With --logs: last N lines first.")
    ] = 0,
) -> None:
    """Show instance events (state, health, exits, restarts, config...).

    Examples: llama-orch events; llama-orch events -f --instance gemma;
    llama-orch events --kinds state,exit --json; llama-orch events --logs gemma
    """
    names, wanted = split(instance), split(kinds)
    check_names(names + ([logs] if logs is not None else []))
    check_kinds(wanted, logs)
    home = home_of(ctx)
    try:
        if not follow_ and logs is None:
            for event in recorded(home, names, wanted, limit):
                print(json.dumps(event) if as_json else render(event))
            return
        client = daemon_client(home)
        for event in follow(client, names, wanted, logs, tail):
            print(json.dumps(event) if as_json else render(event), flush=True)
            if event.get("kind") == "dropped":
                fail("the daemon dropped this stream: it fell behind")
            if event.get("kind") == "end":
                say("the daemon stopped: the stream ended")
                return
        fail("the daemon's event stream ended without a word (did the daemon die?)")
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
    except BrokenPipeError:
        raise quiet_exit() from None
    except (OSError, TimeoutError) as e:
        fail(f"lost the daemon's event stream: {e}")
