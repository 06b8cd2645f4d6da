"""Block YAML for the plain data the exporter builds (dicts, lists, str, int, float, bool).

A small emitter instead of a YAML library: the documents hold only JSON's types, and
every scalar that is not plainly safe is written as a JSON string, which YAML 1.2 reads
as a double-quoted scalar (YAML 1.1 parsers such as PyYAML and kubectl's read it the same
way). Strings that a YAML 1.1 parser would turn into something else (``yes``, ``on``,
``1e3``, ``0x1F``, ``~``, ...) are quoted; multi-line strings (a JSON file in a
ConfigMap) become literal blocks, so they stay readable. Key order is kept.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

# A string written bare only when it is made of these and reads back as the same string.
_PLAIN = re.compile(r"^(?:[A-Za-z_./]|--?[A-Za-z])[A-Za-z0-9_./-]*(?::[A-Za-z0-9_./-]+)*$")
_NOT_A_STRING = re.compile(
    r"^(?:y|n|yes|no|on|off|true|false|null|~|[-+]?\.?(?:inf|nan)|\.)$", re.IGNORECASE
)
_NUMBERISH = re.compile(r"^[-+]?\.?[0-9]")
# What YAML does not allow raw in a document, and its extra line breaks (NEL, U+2028,
# U+2029); json.dumps already escapes the C0 controls.
_UNPRINTABLE = re.compile("[\x7f-\x9f\u2028\u2029\ud800-\udfff\ufeff\ufffe\uffff]")


def _quoted(text: str) -> str:
    """A JSON string, which is a YAML double-quoted scalar, with unprintables escaped."""
    return _UNPRINTABLE.sub(
        lambda m: f"\\u{ord(m.group()):04x}", json.dumps(text, ensure_ascii=False)
    )


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot write {value!r} as YAML for Kubernetes")
        return json.dumps(value)
    if isinstance(value, str):
        if (
            _PLAIN.fullmatch(value)
            and not _NOT_A_STRING.fullmatch(value)
            and not _NUMBERISH.match(value)
        ):
            return value
        return _quoted(value)
    raise TypeError(f"cannot write a {type(value).__name__} as YAML")


def _literal_ok(text: str) -> bool:
    """Can ``text`` be a ``|`` block: printable lines, no leading space on the first line."""
    if "\n" not in text.rstrip("\n") or text.endswith("\n\n") or text[:1] in (" ", "\t", ""):
        return False
    # a trailing blank would be kept, but a line of blanks alone could read as empty
    return all(line.isprintable() and line == line.rstrip() for line in text.split("\n"))


def _literal(text: str, indent: int) -> list[str]:
    head = "|" if text.endswith("\n") else "|-"
    pad = " " * indent
    lines = text.removesuffix("\n").split("\n")
    return [head, *[(pad + line) if line else "" for line in lines]]


def _key(key: Any) -> str:
    if not isinstance(key, str):
        raise TypeError(f"a mapping key must be a string, not {type(key).__name__}")
    return _scalar(key)


def _block(value: Any, indent: int) -> list[str]:
    """Lines for a collection value at ``indent`` spaces."""
    pad = " " * indent
    out: list[str] = []
    if isinstance(value, Mapping):
        for k, v in value.items():
            out += _entry(f"{pad}{_key(k)}:", v, indent + 2)
        return out
    for item in value:
        if (isinstance(item, Mapping) and item) or _is_nonempty_list(item):
            # "- key: value" / "- - item": the nested block starts on the dash's line
            inner = _block(item, indent + 2)
            out.append(f"{pad}- {inner[0].lstrip()}")
            out += inner[1:]
        else:
            out += _entry(f"{pad}-", item, indent + 2)
    return out


def _is_nonempty_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str) and bool(value)


def _entry(head: str, value: Any, indent: int) -> list[str]:
    """``head`` (``key:`` or ``-``) followed by ``value``, inline or as a nested block."""
    if isinstance(value, Mapping):
        return [f"{head} {{}}"] if not value else [head, *_block(value, indent)]
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [f"{head} []"] if not value else [head, *_block(value, indent)]
    if isinstance(value, str) and _literal_ok(value):
        first, *rest = _literal(value, indent)
        return [f"{head} {first}", *rest]
    return [f"{head} {_scalar(value)}"]


def dump(document: Mapping[str, Any]) -> str:
    """One YAML document (no ``---``), ending in a newline."""
    return "\n".join(_block(document, 0)) + "\n" if document else "{}\n"


def dump_all(documents: Sequence[Mapping[str, Any]], header: str = "") -> str:
    """Documents separated by ``---``; ``header`` (``#`` comment lines) comes first."""
    parts = [dump(d) for d in documents]
    return header + "---\n" + "---\n".join(parts) if parts else header


def comment(text: str) -> str:
    """``text`` as ``#`` comment lines."""
    return "".join(f"# {line}".rstrip() + "\n" for line in text.splitlines())
