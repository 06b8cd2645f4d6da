"""One record per request through the gateway, for the daemon's event bus (issue 9, 10)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple


@dataclass(slots=True)
class RequestRecord:
    model: str | None  # the name asked for (an instance name or an alias)
    instance: str | None  # the instance that served it
    method: str
    path: str
    status: int
    ttfb_s: float | None  # request received -> first byte of the instance's response
    duration_s: float  # request received -> response finished (or failed)
    stream: bool = False
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tokens_per_s: float | None = None  # llama-server's timings.predicted_per_second
    error: str | None = None


class Usage(NamedTuple):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tokens_per_s: float | None = None


NO_USAGE = Usage()


# The figures are found with bytes.find instead of parsing the whole answer: a key followed
# by a bare quote cannot occur inside a JSON string (its quotes are escaped there).
TAIL = 4096
_NUMBER = re.compile(rb"\s*:\s*(-?[0-9][0-9.eE+-]*)")
_PROMPT_KEYS = (b'"prompt_tokens"', b'"input_tokens"', b'"prompt_n"')
_COMPLETION_KEYS = (b'"completion_tokens"', b'"output_tokens"', b'"predicted_n"')
_SPEED_KEY = (b'"predicted_per_second"',)


def _number(body: bytes, keys: tuple[bytes, ...]) -> bytes | None:
    for key in keys:
        i = body.find(key)
        if i >= 0:
            m = _NUMBER.match(body, i + len(key))
            if m:
                return m.group(1)
    return None


def _int(raw: bytes | None) -> int | None:
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def usage_from_json(body: bytes) -> Usage:
    """Tokens from a llama-server answer: OpenAI ``usage`` (Anthropic's names too), else
    llama.cpp's ``timings``, and the decode speed from ``timings``."""
    if len(body) > TAIL:
        body = body[-TAIL:]  # llama-server puts usage and timings last
    prompt = _int(_number(body, _PROMPT_KEYS))
    completion = _int(_number(body, _COMPLETION_KEYS))
    raw_speed = _number(body, _SPEED_KEY)
    try:
        speed = float(raw_speed) if raw_speed is not None else None
    except ValueError:
        speed = None
    if prompt is None and completion is None and speed is None:
        return NO_USAGE
    return Usage(prompt, completion, speed)


def usage_from_sse_tail(tail: bytes) -> Usage:
    """The last ``data:`` event of a stream that carries usage or timings (llama-server
    puts them on the final chunk)."""
    for line in reversed(tail.split(b"\n")):
        if line.startswith(b"data:") and (b'"timings"' in line or b'"usage"' in line):
            found = usage_from_json(line[5:])
            if found is not NO_USAGE:
                return found
    return NO_USAGE
