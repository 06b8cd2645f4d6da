"""Loading instance configs from disk, with errors that name file, field, problem and value."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from llama_orchestrator.config.schema import (
    LOCAL_ONLY,
    InstanceConfig,
    RemoteConfig,
    local_only_message,
)
from llama_orchestrator.errors import OrchestratorError
from llama_orchestrator.home import Home, has_config, unknown_instance_message


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
    def remote(self) -> RemoteConfig | None:
        """The server it routes to when it runs none here (issue 13), else None."""
        return self.config.remote

    @property
    def model_path(self) -> Path:
        """``model.path`` resolved against the config file's folder; for a remote
        instance its address (what ``ps`` shows as its model), never a file."""
        if self.config.remote is not None:
            return Path(urlsplit(self.config.remote.url).netloc)
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


# Bounds on what a config may be (issue 10): a config is a few KiB and a few levels deep,
# and without them a 100k-bracket file ends in a RecursionError and a 5000-digit number
# in a ValueError, in the CLI and in the daemon alike.
MAX_CONFIG_BYTES = 1 << 20
MAX_DEPTH = 64
_STRING_RE = re.compile(r'"(?:[^"\\\n]|\\.)*"')
_NOT_BRACKET_RE = re.compile(r"[^\[\]{}]+")
_LONG_NUMBER_RE = re.compile(r"\d{4301,}")  # past Python's int-from-text limit


class _Object(dict[str, Any]):
    """A JSON object that held one key more than once: the keys, for the problem."""

    duplicates: list[str]


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    twice: list[str] = []
    for key, value in pairs:
        if key in out and key not in twice:
            twice.append(key)
        out[key] = value
    if not twice:
        return out
    marked = _Object(out)
    marked.duplicates = twice
    return marked


def _duplicates(data: Any, where: str = "") -> list[str]:
    """Field paths of the keys written twice in one object (depth is bounded already)."""
    found: list[str] = []
    if isinstance(data, dict):
        found += [f"{where}.{k}" if where else k for k in getattr(data, "duplicates", [])]
        for key, value in data.items():
            found += _duplicates(value, f"{where}.{key}" if where else key)
    elif isinstance(data, list):
        for i, value in enumerate(data):
            found += _duplicates(value, f"{where}[{i}]")
    return found


def _too_deep(text: str) -> bool:
    """Are brackets (outside strings) nested deeper than MAX_DEPTH?"""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return False  # too few brackets to be that deep: the usual case, and quick
    depth = 0
    for ch in _NOT_BRACKET_RE.sub("", _STRING_RE.sub("", text)):
        depth += 1 if ch in "[{" else -1
        if depth > MAX_DEPTH:
            return True
    return False


def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def parse_json(text: str, file: str) -> Any:
    """``text`` parsed as JSON within the bounds above; ConfigError naming what is wrong."""

    def fail(message: str, field: str = "(json)") -> ConfigError:
        return ConfigError([Problem(file, field, message)])

    if len(text) > MAX_CONFIG_BYTES or len(text.encode("utf-8", "replace")) > MAX_CONFIG_BYTES:
        raise fail(f"is larger than {MAX_CONFIG_BYTES // 2**20} MiB (a config is a few KiB)")
    if _too_deep(text):
        raise fail(f"nested deeper than {MAX_DEPTH} levels (a config needs a handful)")
    try:
        data = json.loads(text, object_pairs_hook=_object)
    except json.JSONDecodeError as e:
        raise fail(f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    except (ValueError, RecursionError) as e:
        long = _LONG_NUMBER_RE.search(text)
        if long is not None:
            where = f"line {_line_of(text, long.start())}"
            raise fail(f"a number at {where} has {len(long.group())} digits (too long)") from None
        raise fail(f"cannot be parsed: {e}") from None
    twice = _duplicates(data)
    if twice:
        raise ConfigError(
            [
                Problem(file, path, "duplicate key: keep one (only the last one would count)")
                for path in twice
            ]
        )
    return data


def json_object(text: str, file: str) -> dict[str, Any]:
    """``text`` parsed as a JSON object; ConfigError naming the line and column otherwise."""
    data = parse_json(text, file)
    if not isinstance(data, dict):
        raise ConfigError([Problem(file, "(root)", "must be a JSON object", short_value(data))])
    return data


def read_text(path: Path) -> str:
    """A config file's text; ConfigError when it is missing, unreadable or too large."""
    if path.is_dir():
        why = (
            "is a folder, not a file: a config is one JSON file (move the folder aside and "
            "write the config in its place)"
        )
        raise ConfigError([Problem(str(path), "(file)", why)])
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
        text = raw.decode("utf-8")
    except FileNotFoundError:
        why = "no such file"
        if path.is_symlink():
            why = f"is a link to {os.readlink(path)}, which does not exist (fix or remove the link)"
        raise ConfigError([Problem(str(path), "(file)", why)]) from None
    except UnicodeDecodeError as e:
        why = (
            f"is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}): "
            "save it as UTF-8 JSON"
        )
        raise ConfigError([Problem(str(path), "(file)", why)]) from None
    except OSError as e:
        raise ConfigError([Problem(str(path), "(file)", f"cannot read: {e}")]) from None
    if len(raw) > MAX_CONFIG_BYTES:
        why = f"is larger than {MAX_CONFIG_BYTES // 2**20} MiB (a config is a few KiB)"
        raise ConfigError([Problem(str(path), "(file)", why)])
    return text.replace("\r\n", "\n").replace("\r", "\n")  # as text mode reads it


def parse_config(text: str, path: Path, expected_name: str | None = None) -> LoadedConfig:
    """Parse and validate config ``text``; raise ConfigError listing every problem."""
    file = str(path)
    data = json_object(text, file)
    if data.get("remote") is not None:
        local = [k for k in LOCAL_ONLY if k in data]
        if local:  # one problem per field, each naming it (the schema says it only once)
            raise ConfigError([Problem(file, k, local_only_message(k)) for k in local])
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
    if not has_config(path.parent):
        raise UnknownInstance(name, home.instance_names())
    return load_file(path)
