"""``llama-orch ps``: the rows (views/rows.py), filtered and shown as a plain table
(views/table.py), with the notes the daemon recorded.

No rich and no Typer here: ``ps`` is the command people run in loops and scripts, so it
has a fast path (cli/fast.py) that imports only this module, the views it shows, the
state reader and psutil.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from llama_orchestrator.home import Home
from llama_orchestrator.views.rows import instance_rows
from llama_orchestrator.views.table import (
    FilterError,
    parse_filters,
    render_table,
    select,
    shows_stopped,
    use_color,
)


def _meta(home: Home, key: str) -> dict[str, Any]:
    """A JSON object the daemon recorded in the state store's meta table ({}: none)."""
    from llama_orchestrator.state.db import StateStore

    store = StateStore.open_for_reading(home.db_path)
    if store is None:
        return {}
    try:
        raw = store.meta_get(key)
    except Exception:  # an older database without the meta table: nothing to say
        return {}
    finally:
        store.close()
    try:
        found = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def gateway_problem(home: Home) -> str | None:
    """Why the daemon's gateway does not listen, as it recorded (None: it listens)."""
    status = _meta(home, "gateway")
    return None if status.get("listening", True) else str(status.get("reason") or "unknown")


def config_problems(home: Home) -> dict[str, str]:
    """name -> why its config is broken, as the running daemon last scanned it (issue 11:
    it keeps the last good version in force meanwhile)."""
    from llama_orchestrator.state.drift import PROBLEMS_KEY

    return {str(k): str(v) for k, v in _meta(home, PROBLEMS_KEY).items()}


def rows_readable(home: Home) -> bool:
    """The state database opens (a garbage file or a folder does not; issue 19)."""
    from llama_orchestrator.state.db import StateStore

    store = StateStore.open_for_reading(home.db_path)
    if store is None:
        return False
    store.close()
    return True


def run_ps(home: Home, *, all_: bool, as_json: bool, quiet: bool, filters: list[str]) -> int:
    """The whole command; returns its exit code."""
    from llama_orchestrator.client.control import daemon_status

    try:
        parsed = parse_filters(filters)
    except FilterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # Without stopped rows, the configs of never-started instances need not be read.
    rows = select(instance_rows(home, stopped=shows_stopped(all_, parsed)), all_, parsed)
    running = daemon_status(home).running
    problems = config_problems(home) if running else {}
    for row in rows:
        row["config_error"] = problems.get(row["name"])
    if not running:
        print("note: the daemon is not running; showing the last recorded state", file=sys.stderr)
        if home.db_path.exists() and not rows_readable(home):
            print(
                f"note: {home.db_path} is not a database; the next daemon start keeps it "
                "aside as a dated copy and starts a fresh one (its servers are re-adopted)",
                file=sys.stderr,
            )
    elif not quiet:
        why = gateway_problem(home)
        if why:
            print(f"note: the gateway is not listening: {why}", file=sys.stderr)
        for name, problem in sorted(problems.items()):
            print(
                f"note: {name}: invalid config: {problem}",
                file=sys.stderr,
            )
    if quiet:
        out = "\n".join(r["name"] for r in rows)
    elif as_json:
        out = json.dumps(rows, indent=2)
    else:
        out = render_table(rows, use_color(sys.stdout))
    if out:
        print(out)
    return 0
