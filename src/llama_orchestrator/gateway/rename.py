"""Answers name the model the client asked for (issue 20).

Every local instance is started with ``-a NAME``, so llama-server itself answers
``"model":"NAME"`` and a request that names the instance is relayed untouched. A request
that names an alias (or a pool's shared name) gets that name back: ``Rename`` replaces
the server's ``"model":"NAME"`` with ``"model":"ALIAS"`` in each body piece as it passes.
llama-server writes compact JSON (no space after the colon), so one ``bytes.replace`` per
piece does it. A piece that ends inside the pattern keeps those few bytes back until the
next piece: only when the pattern is really cut there, so a stream's event never waits.

An instance whose answered name is not known (a remote server, one whose ``args`` set
``-a`` themselves: ``Instance.answers_as`` is None) has every ``"model":"..."`` value
replaced, whatever it says, so no file path of another machine reaches the client.
"""

from __future__ import annotations

import json
import re
from typing import Protocol

# A compact JSON "model" member with its string value (escapes included).
_ANY_MODEL = re.compile(rb'"model":"(?:[^"\\]|\\.)*"')
_OPEN = b'"model":"'


def _model_field(name: str) -> bytes:
    return b'"model":' + json.dumps(name, ensure_ascii=False).encode()


class _Answering(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def answers_as(self) -> str | None: ...


def _cut_prefix(data: bytes, pattern: bytes) -> int:
    """Where ``data`` ends with the start of ``pattern`` (which opens with a quote), or -1.
    Only the quotes in the last len(pattern) - 1 bytes are looked at."""
    j = data.find(b'"', max(0, len(data) - len(pattern) + 1))
    while j >= 0:
        if pattern.startswith(data[j:]):
            return j
        j = data.find(b'"', j + 1)
    return -1


class Rename:
    __slots__ = ("_held", "_new", "_old")

    def __init__(self, answered: str | None, asked: str) -> None:
        self._old = None if answered is None else _model_field(answered)
        self._new = _model_field(asked)
        self._held = b""

    @classmethod
    def between(cls, answered: str, asked: str | None) -> Rename | None:
        """A ``Rename`` when the client asked for another name than the one answered."""
        if asked is None or asked == answered:
            return None
        return cls(answered, asked)

    @classmethod
    def of(cls, instance: _Answering, asked: str | None) -> Rename | None:
        """For an answer of ``instance`` to a request that named ``asked``."""
        answered = instance.answers_as
        if answered is not None:
            return cls.between(answered, asked)
        return None if asked is None else cls(None, asked)

    def feed(self, data: bytes) -> bytes:
        if self._held:
            data = self._held + data
            self._held = b""
        old = self._old
        if old is None:
            data = _ANY_MODEL.sub(self._new.replace(b"\\", b"\\\\"), data)
            # An opened value not closed in this piece waits for the rest of it.
            j = data.rfind(_OPEN)
            if j >= 0 and _ANY_MODEL.match(data, j) is None:
                self._held = data[j:]
                return data[:j]
            j = _cut_prefix(data, _OPEN)
        else:
            data = data.replace(old, self._new)
            j = _cut_prefix(data, old)
        if j >= 0:
            self._held = data[j:]
            return data[:j]
        return data

    def rest(self) -> bytes:
        """What was held back, at the end of the body."""
        held, self._held = self._held, b""
        return held
