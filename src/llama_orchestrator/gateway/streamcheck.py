"""What a relayed event stream must hold for a client to trust it.

Two things llama-server does not always give, which clients depend on:

* **An end that says so.** OpenAI's streams end with ``data: [DONE]``, Anthropic's with
  ``event: message_stop``, the Responses API's with ``response.completed`` (or
  ``.incomplete``/``.failed``). A stream whose instance ended it cleanly before that event
  (it hit an error and closed, or was stopped between two events) would otherwise read as
  a whole answer. ``StreamCheck.complete`` tells the relay, which then ends the stream
  with an error event in its own format and counts it as 502.
* **Anthropic's ``message_start``.** llama-server drops it when its first token is an
  incomplete UTF-8 sequence (a model's first byte of a multi-byte character), and the
  Anthropic SDK's stream helper fails without it. When the first event of a
  ``/v1/messages`` stream is not ``message_start``, one is put in front of it, naming the
  model the client asked for.

Markers are matched after a real newline (or at the stream's start), which no JSON string
in an event can hold, so text a model writes never looks like an end. The check costs one
``in`` over each piece and the few bytes kept from the piece before.
"""

from __future__ import annotations

import json
import secrets

_OPENAI = (b"\ndata: [DONE]",)
_ENDS: dict[bytes, tuple[bytes, ...]] = {
    b"/v1/chat/completions": _OPENAI,
    b"/chat/completions": _OPENAI,
    b"/v1/completions": _OPENAI,
    b"/completions": _OPENAI,
    b"/v1/messages": (b"\nevent: message_stop",),
    b"/v1/responses": (
        b"\nevent: response.completed",
        b"\nevent: response.incomplete",
        b"\nevent: response.failed",
    ),
}
_KEEP = max(len(m) for ends in _ENDS.values() for m in ends)
# A first event longer than this is let through as it is (no message_start is looked for).
_FIRST_MAX = 4096


def _route(path: bytes) -> bytes:
    return path.split(b"?", 1)[0].rstrip(b"/")


class StreamCheck:
    """Watches one event stream's pieces as they pass (``feed``), in order."""

    __slots__ = ("_ends", "_first", "_model", "_prev", "complete")

    def __init__(self, path: bytes, model: str) -> None:
        route = _route(path)
        self._ends = _ENDS.get(route, ())
        self.complete = not self._ends  # a stream of another route has no end to check
        self._prev = b"\n"  # the stream's start counts as after a newline
        self._model = model
        self._first: bytes | None = b"" if route == b"/v1/messages" else None

    @staticmethod
    def watches(path: bytes) -> bool:
        return _route(path) in _ENDS

    def feed(self, data: bytes) -> bytes:
        """``data`` as it goes to the client (with a ``message_start`` put in front, or
        held back while the first event is still arriving: then empty)."""
        if self._first is not None:
            data = self._first + data
            end = data.find(b"\n\n")
            if end < 0 and len(data) < _FIRST_MAX:
                self._first = data
                return b""
            self._first = None
            if b"message_start" not in data[: end if end >= 0 else _FIRST_MAX]:
                data = self._message_start() + data
        if not self.complete:
            window = self._prev + data
            if any(end in window for end in self._ends):
                self.complete = True
            else:
                self._prev = window[-_KEEP:]
        return data

    def rest(self) -> bytes:
        """What is still held back when the stream ends (a first event never finished)."""
        held, self._first = self._first or b"", None
        return held

    def _message_start(self) -> bytes:
        message: dict[str, object] = {
            "id": "msg_" + secrets.token_hex(12),
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": self._model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        data = json.dumps({"type": "message_start", "message": message}, ensure_ascii=False)
        return b"event: message_start\ndata: " + data.encode() + b"\n\n"
