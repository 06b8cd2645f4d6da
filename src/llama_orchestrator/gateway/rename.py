"""Answers name the model the client asked for (issue 20).

Every local instance is started with ``-a NAME``, so llama-server itself answers
``"model":"NAME"`` and a request that names the instance is relayed untouched. A request
that names an alias (or a pool's shared name) gets that name back: ``Rename`` replaces
the server's ``"model":"NAME"`` with ``"model":"ALIAS"`` in each body piece as it passes.
llama-server writes compact JSON (no space after the colon), so one ``bytes.replace`` per
piece does it. A piece that ends inside the pattern keeps those few bytes back until the
next piece: only when the pattern is really cut there, so a stream's event never waits.
"""

from __future__ import annotations

import json


def _model_field(name: str) -> bytes:
    return b'"model":' + json.dumps(name, ensure_ascii=False).encode()


class Rename:
    __slots__ = ("_held", "_new", "_old")

    def __init__(self, answered: str, asked: str) -> None:
        self._old = _model_field(answered)
        self._new = _model_field(asked)
        self._held = b""

    @classmethod
    def between(cls, answered: str, asked: str | None) -> Rename | None:
        """A ``Rename`` when the client asked for another name than the one answered."""
        if asked is None or asked == answered:
            return None
        return cls(answered, asked)

    def feed(self, data: bytes) -> bytes:
        if self._held:
            data = self._held + data
            self._held = b""
        old = self._old
        data = data.replace(old, self._new)
        # Does the piece end with the start of the pattern? Look at each quote in the last
        # len(old) - 1 bytes (the pattern starts with one).
        j = data.find(b'"', max(0, len(data) - len(old) + 1))
        while j >= 0:
            if old.startswith(data[j:]):
                self._held = data[j:]
                return data[:j]
            j = data.find(b'"', j + 1)
        return data

    def rest(self) -> bytes:
        """What was held back, at the end of the body."""
        held, self._held = self._held, b""
        return held
