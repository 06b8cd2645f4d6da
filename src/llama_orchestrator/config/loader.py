"""Loading instance configs from disk, with errors that name file, field, problem and value."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from llama_orchestrator.config.schema import InstanceConfig
from llama_orchestrator.errors import OrchestratorError
from llama_orchestrator.home import Home, unknown_instance_message


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config file, printed as ``file: field: problem (value)``."""

    file: str
    field: str
    message: str
    value: str | None = None

    def __str__(self) -> str:
        tail = f" ({self.value})" if self.value is not None else ""
        return f"{self.file}: {self.field}: {self.message}{tail}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "field": self.field,
            "message": self.message,
            "value": self.value,
        }


class ConfigError(OrchestratorError):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True)
class LoadedConfig:
    config: InstanceConfig
    path: Path
    raw_hash: str

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def model_path(self) -> Path:
        """``model.path`` resolved against the config file's folder."""
        p = self.config.model.path.expanduser()
        return p if p.is_absolute() else (self.path.parent / p).resolve()


def short_value(value: Any) -> str:
    """A value as a problem line shows it: JSON, or a quoted string, cut at 80 characters."""
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _field_path(loc: tuple[int | str, ...]) -> str:
    if loc and loc[-1] == "[key]":  # pydantic's marker for a bad key of a mapping
        loc = loc[:-1]
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"


def problems_from_validation(file: str, err: ValidationError) -> list[Problem]:
    problems = []
    for e in err.errors():
        loc = tuple(e["loc"])
        if e["type"] == "extra_forbidden":
            problems.append(
                Problem(file, _field_path(loc), "unknown field (check its spelling)", None)
            )
            continue
        value = None if e["type"] == "missing" else short_value(e.get("input"))
        msg = e["msg"]
        if e["type"] == "missing":
            msg = "required field is missing"
        elif e["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")  # our own validators' messages, as written
        problems.append(Problem(file, _field_path(loc), msg, value))
    return problems


def json_object(text: str, file: str) -> dict[str, Any]:
    """``text`` parsed as a JSON object; ConfigError naming the line and column otherwise."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(
            [Problem(file, "(json)", f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}")]
        ) from None
    if not isinstance(data, dict):
        raise ConfigError([Problem(file, "(root)", "must be a JSON object", short_value(data))])
    return data


def read_text(path: Path) -> str:
    """A config file's text; ConfigError when it is missing or unreadable."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem(str(path), "(file)", "no such file")]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError([Problem(str(path), "(file)", f"cannot read: {e}")]) from None


def parse_config(text: str, path: Path, expected_name: str | None = None) -> LoadedConfig:
    """Parse and validate config ``text``; raise ConfigError listing every problem."""
    file = str(path)
    data = json_object(text, file)
    try:
        cfg = InstanceConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(problems_from_validation(file, e)) from None
    if expected_name is not None and cfg.name != expected_name:
        raise ConfigError(
            [
                Problem(
                    file,
                    "name",
                    f"must equal its folder's name {expected_name!r} (rename one of them)",
                    short_value(cfg.name),
                )
            ]
        )
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return LoadedConfig(cfg, path, digest)


def load_file(path: Path, *, check_folder_name: bool = True) -> LoadedConfig:
    text = read_text(path)
    expected = path.parent.name if check_folder_name and path.name == "config.json" else None
    return parse_config(text, path, expected)


class UnknownInstance(OrchestratorError, LookupError):
    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        super().__init__(unknown_instance_message([name], known))


def load_instance(home: Home, name: str) -> LoadedConfig:
    path = home.config_path(name)
    if not path.is_file():
        raise UnknownInstance(name, home.instance_names())
    return load_file(path)
