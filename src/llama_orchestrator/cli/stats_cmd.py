"""``llama-orch stats [NAME...]``: live resource use of running instances, like
``docker stats``: CPU, RSS, VRAM, requests in flight and tokens/s.

CPU % is of one core (a server busy on 4 cores shows 400%), over the time since the
previous refresh; RSS and VRAM are summed over the server's process tree. VRAM comes
from ``nvidia-smi`` where it is installed, requests in flight and tokens/s from the
daemon's gateway; what is not known shows ``-`` (``null`` in JSON).
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from typing import Annotated, Any

import typer

from llama_orchestrator.cli.common import check_names, home_of, quiet_exit, say

REFRESH_S = 2.0  # as docker stats
FIRST_SAMPLE_S = 1.0  # the window of the first CPU figure
COLUMNS = ("NAME", "PID", "CPU %", "RSS", "EST RAM", "VRAM", "EST VRAM", "IN FLIGHT", "TOK/S")


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    if n >= 1024**3:
        return f"{n / 1024**3:.2f}GiB"
    return f"{n / 1024**2:.1f}MiB"


def render(rows: list[dict[str, Any]]) -> str:
    cells = [
        [
            r["name"],
            str(r["pid"]),
            f"{r['cpu_percent']:.1f}%",
            _size(r["rss_bytes"]),
            _size(r.get("estimate_host_bytes")),
            _size(r["vram_bytes"]),
            _size(r.get("estimate_vram_bytes")),
            "-" if r["in_flight"] is None else str(r["in_flight"]),
            "-" if r["tokens_per_s"] is None else f"{r['tokens_per_s']:.1f}",
        ]
        for r in rows
    ]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(COLUMNS)]
    lines = [list(COLUMNS), *cells]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def _known(home: Any, names: list[str]) -> None:
    """Fail when a name is neither a defined instance nor a record."""
    from llama_orchestrator.cli.common import require_known
    from llama_orchestrator.state.db import StateStore

    store = StateStore.open_for_reading(home.db_path)
    recorded: set[str] = set()
    if store is not None:
        try:
            recorded = {r.name for r in store.all()}
        finally:
            store.close()
    missing = [n for n in names if n not in recorded]
    if missing:
        require_known(home, missing)


app = typer.Typer()


@app.command()
def stats(
    ctx: typer.Context,
    names: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[NAME]...",
            help="Instance names (default: all running).",
            show_default=False,
        ),
    ] = None,
    no_stream: Annotated[
        bool, typer.Option("--no-stream", help="Print one sample and exit.")
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Machine-readable: a JSON array (one line per refresh)."),
    ] = False,
) -> None:
    """Live CPU, RSS, VRAM, requests in flight and tokens/s of running instances.

    Refreshes every 2 s, like docker stats, until Ctrl+C; --no-stream prints once.
    CPU % is of one core; unknown figures show '-'.

    Examples: llama-orch stats; llama-orch stats gemma --no-stream --json
    """
    from llama_orchestrator.cli.stats_data import Sampler
    from llama_orchestrator.client.control import daemon_status

    home = home_of(ctx)
    wanted = list(dict.fromkeys(names)) if names else None
    if wanted:
        check_names(wanted)
        _known(home, wanted)
    sampler = Sampler(home, wanted)
    running = sampler.running()
    for name in wanted or []:
        if name not in running:
            say(f"note: {name} is not running")
    if not daemon_status(home).running:
        say("note: the daemon is not running: requests in flight and tokens/s are unknown")
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda _sig, _frame: stop.set())
    tty = sys.stdout.isatty()
    try:
        stop.wait(FIRST_SAMPLE_S if running else 0)
        while not stop.is_set():
            rows = sampler.sample()
            if as_json:
                out = json.dumps(rows, indent=2 if no_stream else None)
            else:
                out = render(rows)
                if tty and not no_stream:
                    out = "\x1b[H\x1b[J" + out  # redraw in place, as docker stats does
                elif not no_stream:
                    out += "\n"  # frames apart when written to a file or a pipe
            print(out, flush=True)
            if no_stream:
                break
            stop.wait(REFRESH_S)
    except BrokenPipeError:
        raise quiet_exit() from None
    finally:
        signal.signal(signal.SIGINT, previous)
