"""The answer's ``model`` renamed on the way, whatever piece boundaries cut it (issue 20)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from llama_orchestrator.gateway.rename import Rename

STREAM = (
    b'data: {"choices":[],"model":"chat","id":"a"}\n\n'
    b'data: {"choices":[{"delta":{"content":"\\"model\\":\\"chat\\""}}],"model":"chat"}\n\n'
    b"data: [DONE]\n\n"
)
PATHS = (
    b'{"model":"/srv/models/x \\"q\\".gguf","object":"chat.completion"}{"model":"other","usage":{}}'
)


@dataclass
class Inst:
    name: str
    answers_as: str | None


def _all_cuts(make: object, data: bytes) -> set[bytes]:
    outs = set()
    for a in range(len(data) + 1):
        for b in range(a, len(data) + 1, 7):
            r = make()  # type: ignore[operator]
            outs.add(r.feed(data[:a]) + r.feed(data[a:b]) + r.feed(data[b:]) + r.rest())
    return outs


def test_an_alias_gets_its_name_back_at_every_cut() -> None:
    want = STREAM.replace(b'"model":"chat"', b'"model":"org/gpt"')
    assert _all_cuts(lambda: Rename("chat", "org/gpt"), STREAM) == {want}
    # the text inside a message is escaped JSON: never taken for the member
    assert b'\\"model\\":\\"chat\\"' in want


def test_an_unknown_answered_name_is_replaced_whatever_it_says() -> None:
    """A remote server's answer (its file path, escapes included) names the model asked."""
    outs = _all_cuts(lambda: Rename(None, 'we\\ird"'), PATHS)
    assert len(outs) == 1
    (out,) = outs
    first, second = out.split(b"}{")
    assert json.loads(first + b"}")["model"] == 'we\\ird"'
    assert json.loads(b"{" + second)["model"] == 'we\\ird"'


@pytest.mark.parametrize(
    ("answers_as", "asked", "renames"),
    [("chat", "chat", False), ("chat", "gpt", True), (None, "chat", True), ("chat", None, False)],
)
def test_which_answers_are_renamed(
    answers_as: str | None, asked: str | None, renames: bool
) -> None:
    assert (Rename.of(Inst("chat", answers_as), asked) is not None) is renames
