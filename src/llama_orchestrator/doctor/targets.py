"""The configs that ``config validate`` and ``config lint`` read, and how they read them.

A :class:`Target` names one file; :func:`load_entry` reads it into an :class:`Entry` that
keeps a file or JSON problem apart from schema problems, since lint reports them as
separate checks. :func:`home_configs` is the pool a config is compared with (ports, GPU
memory): every instance of the home that loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llama_orchestrator.config.loader import (
    ConfigError,
    LoadedConfig,
    Problem,
    load_file,
    parse_config,
    parse_json,
    read_text,
)
from llama_orchestrator.home import Home


@dataclass(frozen=True)
class Target:
    """One config file to check; ``label`` names it in reports."""

    label: str
    path: Path
    check_name: bool  # a ``config.json`` must be named like its folder

    @classmethod
    def of_instance(cls, home: Home, name: str) -> Target:
        return cls(name, home.config_path(name), True)

    @classmethod
    def of_file(cls, path: Path) -> Target:
        in_folder = path.name == "config.json"
        return cls(path.parent.name if in_folder else path.stem, path, in_folder)


@dataclass(frozen=True)
class Entry:
    """A target after reading: a JSON/file problem, schema problems, or a loaded config."""

    target: Target
    json_problem: Problem | None
    schema_problems: tuple[Problem, ...]
    loaded: LoadedConfig | None

    @property
    def problems(self) -> list[Problem]:
        first = [self.json_problem] if self.json_problem else []
        return first + list(self.schema_problems)


def load_entry(target: Target) -> Entry:
    try:
        text = read_text(target.path)
    except ConfigError as e:  # the one "(file)" problem: missing or unreadable
        return Entry(target, e.problems[0], (), None)
    try:
        parse_json(text, str(target.path))
    except ConfigError as e:  # bad JSON, or past the loader's bounds
        return Entry(target, e.problems[0], (), None)
    try:
        loaded = parse_config(text, target.path, target.label if target.check_name else None)
    except ConfigError as e:
        return Entry(target, None, tuple(e.problems), None)
    return Entry(target, None, (), loaded)


def home_configs(home: Home) -> list[LoadedConfig]:
    """Every instance of the home that loads; the broken ones are reported elsewhere."""
    out = []
    for name in home.instance_names():
        try:
            out.append(load_file(home.config_path(name)))
        except ConfigError:
            continue
    return out
