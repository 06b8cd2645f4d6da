"""A streamed completion through the gateway, for ``llama-orch chat``.

OpenAI's streaming form: ``"stream": true`` makes the server answer with server-sent
events, one ``data: {json}`` line per piece of text and ``data: [DONE]`` at the end;
llama-server puts ``usage`` and its ``timings`` (``predicted_per_second``) on the last
piece. Standard library only, like the control API's client.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from llama_orchestrator.errors import OrchestratorError

READ_TIMEOUT_S = 600.0  # a request for a stopped instance waits for its start


class CompletionError(OrchestratorError):
    """The gateway or the server refused or broke off the request; one line."""


@dataclass
class Result:
    tokens: int | None = None  # as the server counted them, else the pieces received
    seconds: float = 0.0  # the request's wall time, waiting for the first piece included
    tokens_per_s: float | None = None  # the server's decode speed, else tokens / seconds


def endpoint(url: str) -> tuple[str, int]:
    """(host, port) to reach a gateway that listens on ``url`` (wildcards mean loopback)."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return host, parts.port or 80


def _error_text(raw: bytes, status: int) -> str:
    try:
        body: Any = json.loads(raw)
    except ValueError:
        text = raw.decode("utf-8", "replace").strip()
        return f"HTTP {status}: {text[:300] or 'no details'}"
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict) and err.get("message"):
        return str(err["message"])
    if isinstance(err, str):
        return err
    return f"HTTP {status}: {str(body)[:300]}"


def _piece(event: dict[str, Any], chat: bool) -> str:
    choices = event.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        return ""
    if chat:
        delta = choices[0].get("delta") or choices[0].get("message") or {}
        return str(delta.get("content") or "")
    return str(choices[0].get("text") or "")


def stream(
    url: str,
    model: str,
    prompt: str,
    *,
    max_tokens: int,
    chat: bool = False,
    api_key: str | None = None,
    on_text: Callable[[str], None],
    timeout: float = READ_TIMEOUT_S,
) -> Result:
    """Ask the gateway at ``url`` for a streamed completion; ``on_text`` gets each piece.

    Raises CompletionError (the request was refused, or the stream carried an error)
    or OSError (the gateway could not be reached or hung up).
    """
    import http.client

    path = "/v1/chat/completions" if chat else "/v1/completions"
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "stream": True}
    if chat:
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    host, port = endpoint(url)
    started = time.monotonic()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("POST", path, body=json.dumps(body).encode(), headers=headers)
        resp = conn.getresponse()
        if resp.status != 200:
            raise CompletionError(_error_text(resp.read(), resp.status))
        if "text/event-stream" not in (resp.getheader("Content-Type") or ""):
            # a server that answers in one piece: show it all the same
            event = json.loads(resp.read() or b"{}")
            return _finish(_one(event, chat, on_text), event, started)
        return _events(resp, chat, on_text, started)
    finally:
        conn.close()


def _one(event: dict[str, Any], chat: bool, on_text: Callable[[str], None]) -> Result:
    if "error" in event:
        raise CompletionError(_error_text(json.dumps(event).encode(), 200))
    text = _piece(event, chat)
    if text:
        on_text(text)
    return Result(tokens=1 if text else 0)


def _events(resp: Any, chat: bool, on_text: Callable[[str], None], started: float) -> Result:
    result = Result(tokens=0)
    last: dict[str, Any] = {}
    for raw in resp:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue  # blank lines between events, comments, "event:" lines
        payload = line[5:].strip()
        if payload == b"[DONE]":
            break
        try:
            event = json.loads(payload)
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        if "error" in event:
            raise CompletionError(_error_text(payload, 200))
        text = _piece(event, chat)
        if text:
            on_text(text)
            result.tokens = (result.tokens or 0) + 1
        if "usage" in event or "timings" in event:
            last = event
    return _finish(result, last, started)


def _finish(result: Result, last: dict[str, Any], started: float) -> Result:
    result.seconds = time.monotonic() - started
    usage = last.get("usage")
    timings = last.get("timings")
    usage = usage if isinstance(usage, dict) else {}
    timings = timings if isinstance(timings, dict) else {}
    counted = usage.get("completion_tokens", timings.get("predicted_n"))
    if isinstance(counted, int):
        result.tokens = counted
    speed = timings.get("predicted_per_second")
    if isinstance(speed, (int, float)):
        result.tokens_per_s = float(speed)
    elif result.tokens and result.seconds > 0:
        result.tokens_per_s = result.tokens / result.seconds
    return result
