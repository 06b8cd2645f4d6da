"""What one ``config lint`` check answers: a level and a one-line message.

Shared by the modules that run the checks. A check returns a :data:`Verdict`; the runner
(:mod:`~llama_orchestrator.doctor.lint`) adds the instance and the file it looked at.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from llama_orchestrator.config.loader import Problem

Level = Literal["ok", "warning", "error"]
Verdict = tuple[Level, str]
Named = tuple[str, Verdict]  # a check's name and its verdict: ("port-free", ("ok", "..."))


def problem_text(p: Problem, *, with_file: bool = False) -> str:
    """A problem as a lint message: ``field: message (value)``, its file when it differs."""
    tail = f" ({p.value})" if p.value is not None else ""
    head = f"{p.file}: " if with_file else ""
    return f"{head}{p.field}: {p.message}{tail}"


def json_row(p: Problem) -> str:
    """A file's or its JSON's problem as the ``json`` row says it (its field when it has one)."""
    return p.message if p.field in ("(json)", "(file)") else problem_text(p)


def syntax_verdicts(json_error: str | None, schema_problems: Sequence[Problem]) -> list[Named]:
    """A file's ``json`` row, then its ``schema`` rows: one per problem, or one ok."""
    if json_error is not None:
        return [("json", ("error", json_error))]
    rows: list[Named] = [("json", ("ok", "valid JSON"))]
    rows += [("schema", ("error", problem_text(p))) for p in schema_problems]
    if not schema_problems:
        rows.append(("schema", ("ok", "matches the schema")))
    return rows
