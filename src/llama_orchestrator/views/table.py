"""``ps``'s plain table: its filters and a colour-aware, aligned rendering.

No rich and no Typer here: ``ps`` is the command people run in loops and scripts, so it
has a fast path (cli/fast.py) that imports only this, the rows and the state reader.
"""

from __future__ import annotations

import os
from typing import Any, TextIO

from llama_orchestrator.engine.states import State
from llama_orchestrator.errors import OrchestratorError
from llama_orchestrator.views.styles import PS_COLUMNS, cell_style, ps_cells

FILTER_KEYS = ("name", "status", "health", "backend", "device", "desired")
_ANSI = {"green": "32", "yellow": "33", "red": "31", "dim": "2"}


class FilterError(OrchestratorError, ValueError):
    pass


def parse_filters(specs: list[str]) -> dict[str, set[str]]:
    """``status=running`` style filters; one key given twice means either value."""
    out: dict[str, set[str]] = {}
    for spec in specs:
        key, sep, value = spec.partition("=")
        if not sep or not value or key not in FILTER_KEYS:
            raise FilterError(
                f"invalid filter {spec!r}: use KEY=VALUE with KEY one of {', '.join(FILTER_KEYS)}"
                " (e.g. --filter status=running)"
            )
        out.setdefault(key, set()).add(value)
    return out


def shows_stopped(all_: bool, filters: dict[str, set[str]]) -> bool:
    """Whether :func:`select` can keep a stopped row (plain ``ps`` hides them)."""
    if "status" in filters:
        return State.STOPPED.value in filters["status"]
    return all_


def select(
    rows: list[dict[str, Any]], all_: bool, filters: dict[str, set[str]]
) -> list[dict[str, Any]]:
    if not shows_stopped(all_, filters):
        rows = [r for r in rows if r["status"] != State.STOPPED]
    return [r for r in rows if all(str(r.get(k)) in v for k, v in filters.items())]


def use_color(stream: TextIO) -> bool:
    return stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def render_table(rows: list[dict[str, Any]], color: bool) -> str:
    cells = [list(ps_cells(r).values()) for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(PS_COLUMNS)]

    def line(values: list[str], styles: list[str | None]) -> str:
        parts = []
        for value, width, style in zip(values, widths, styles, strict=True):
            padded = value.ljust(width)
            if color and style in _ANSI:
                padded = f"\x1b[{_ANSI[style]}m{value}\x1b[0m" + " " * (width - len(value))
            parts.append(padded)
        return "  ".join(parts).rstrip()

    out = [line(list(PS_COLUMNS), [None] * len(PS_COLUMNS))]
    for r, values in zip(rows, cells, strict=True):
        out.append(line(values, [cell_style(c, r) for c in PS_COLUMNS]))
    return "\n".join(out)
