"""Ollama's request and answer shapes, to and from what llama-server speaks (issue 20).

Requests: ``/api/chat`` becomes ``/v1/chat/completions``; ``/api/generate`` becomes a chat
with one user message (Ollama applies the model's template to a prompt too), or
``/v1/completions`` with ``raw: true``; ``/api/embed`` and ``/api/embeddings`` become
``/v1/embeddings``. Each ``options`` entry a llama-server honours per request is mapped
(``OPTIONS``); the load-time ones (``LOAD_TIME``: the context size, layers, threads ...)
are set in the instance's config instead, and are ignored here, as are unknown ones.
Answers: llama-server's JSON, or each event of its stream, becomes Ollama's; the timings
llama-server sends give Ollama's counts and durations (nanoseconds).
"""

from __future__ import annotations

import json
import math
import re
import time
from typing import Any

from llama_orchestrator.errors import OrchestratorError

# Ollama option -> llama-server request field.
OPTIONS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "typical_p": "typical_p",
    "seed": "seed",
    "num_predict": "max_tokens",
    "stop": "stop",
    "repeat_penalty": "repeat_penalty",
    "repeat_last_n": "repeat_last_n",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "mirostat": "mirostat",
    "mirostat_tau": "mirostat_tau",
    "mirostat_eta": "mirostat_eta",
    "num_keep": "n_keep",
}
# Options that size the loaded model: the instance's config decides them.
LOAD_TIME = frozenset(
    {"num_ctx", "num_batch", "num_gpu", "main_gpu", "num_thread", "use_mmap", "use_mlock",
     "numa", "low_vram", "vocab_only", "f16_kv", "logits_all"}
)  # fmt: skip
CHAT, GENERATE, COMPLETE, EMBED, EMBEDDINGS = range(5)


class BadRequest(OrchestratorError, ValueError):
    """Bad input: answered 400 ``{"error": message}``."""


def iso_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime())


def _options(doc: dict[str, Any], out: dict[str, Any]) -> None:
    options = doc.get("options")
    if options is None:
        return
    if not isinstance(options, dict):
        raise BadRequest("'options' must be an object, e.g. {\"temperature\": 0.7}")
    for key, value in options.items():
        field = OPTIONS.get(key)
        if field is None or value is None:
            continue  # a load-time option (the instance's config sets it) or unknown
        if key == "num_predict" and isinstance(value, int) and value < 0:
            continue  # -1: until the context is full, as llama-server does anyway
        out[field] = value


def _format(doc: dict[str, Any], out: dict[str, Any]) -> None:
    fmt = doc.get("format")
    if fmt in (None, ""):
        return
    if fmt == "json":
        out["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict):
        out["response_format"] = {"type": "json_schema", "json_schema": {"schema": fmt}}
    else:
        raise BadRequest("'format' is \"json\" or a JSON schema object")


def _images(content: str, images: Any) -> Any:
    if not images:
        return content
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        raise BadRequest("'images' is a list of base64-encoded images")
    parts: list[dict[str, Any]] = [{"type": "text", "text": content}]
    for image in images:
        url = f"data:image/png;base64,{image}"
        parts.append({"type": "image_url", "image_url": {"url": url}})
    return parts


def _message(msg: Any, i: int) -> dict[str, Any]:
    if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
        raise BadRequest(f"messages[{i}] needs a 'role' (system, user, assistant or tool)")
    content = msg.get("content") or ""
    if not isinstance(content, str):
        raise BadRequest(f"messages[{i}].content must be a string")
    out: dict[str, Any] = {"role": msg["role"], "content": _images(content, msg.get("images"))}
    calls = msg.get("tool_calls")
    if isinstance(calls, list) and calls:
        out["tool_calls"] = [
            {
                "id": f"call_{i}_{k}",
                "type": "function",
                "function": {
                    "name": (c.get("function") or {}).get("name", ""),
                    "arguments": json.dumps((c.get("function") or {}).get("arguments") or {}),
                },
            }
            for k, c in enumerate(calls)
            if isinstance(c, dict)
        ]
    return out


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def keep_alive(value: Any) -> int | None:
    """Ollama's ``keep_alive`` in whole seconds: None when absent, 0 to unload, -1 to keep
    it loaded for ever. A number is seconds; a string a Go duration (``"5m"``, ``"1h30m"``)
    or a number of seconds."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise BadRequest("'keep_alive' is a duration such as \"5m\" or a number of seconds")
    if isinstance(value, str):
        text = value.strip()
        sign = -1.0 if text.startswith("-") else 1.0
        text = text.lstrip("+-")
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise BadRequest(
                    f'\'keep_alive\' {value!r} is not a duration: write e.g. "5m", "1h", '
                    '"30s", 0 (unload after the answer) or -1 (keep it loaded)'
                ) from None
            seconds = sum(float(n) * _UNIT[u] for n, u in parts)
        seconds *= sign
    else:
        seconds = float(value)
    if seconds < 0:
        return -1
    return 0 if seconds == 0 else max(1, math.ceil(seconds))


def model_of(doc: Any) -> str:
    if not isinstance(doc, dict):
        raise BadRequest("the request body must be a JSON object")
    model = doc.get("model") or doc.get("name")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required: the name of a model from /api/tags")
    return model


def _is_tool(tool: Any) -> bool:
    fn = tool.get("function") if isinstance(tool, dict) else None
    return (
        isinstance(tool, dict)
        and tool.get("type", "function") == "function"
        and isinstance(fn, dict)
        and isinstance(fn.get("name"), str)
        and isinstance(fn.get("parameters", {}), dict)
    )


def chat_request(doc: dict[str, Any], stream: bool) -> dict[str, Any]:
    messages = doc.get("messages") or []
    if not isinstance(messages, list):
        raise BadRequest('\'messages\' must be a list of {"role", "content"} objects')
    out: dict[str, Any] = {
        "model": doc["model"],
        "messages": [_message(m, i) for i, m in enumerate(messages)],
        "stream": stream,
    }
    tools = doc.get("tools")
    if tools:
        # llama-server answers 500 to a malformed tool: refuse it here, naming the shape.
        if not isinstance(tools, list) or not all(_is_tool(x) for x in tools):
            raise BadRequest(
                '\'tools\' must be a list of {"type": "function", "function": {"name": ..., '
                '"parameters": {...}}} objects'
            )
        out["tools"] = tools
    _options(doc, out)
    _format(doc, out)
    return out


def generate_request(doc: dict[str, Any], stream: bool) -> tuple[int, dict[str, Any]]:
    prompt = doc.get("prompt") or ""
    system = doc.get("system")
    if not isinstance(prompt, str) or (system is not None and not isinstance(system, str)):
        raise BadRequest("'prompt' and 'system' must be strings")
    out: dict[str, Any] = {"model": doc["model"], "stream": stream}
    kind = GENERATE
    if doc.get("raw") is True:
        kind = COMPLETE
        out["prompt"] = prompt
    else:
        messages: list[dict[str, Any]] = []
        if system:
            messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": _images(prompt, doc.get("images"))})
        out["messages"] = messages
    _options(doc, out)
    _format(doc, out)
    return kind, out


def embed_request(doc: dict[str, Any], kind: int) -> dict[str, Any]:
    key = "prompt" if kind == EMBEDDINGS else "input"
    text = doc.get(key)
    ok = isinstance(text, str) or (
        isinstance(text, list) and text and all(isinstance(t, str) for t in text)
    )
    if not ok:
        raise BadRequest(
            f"'{key}' is a string" + (" or a list of strings" if key == "input" else "")
        )
    return {"model": doc["model"], "input": text, "encoding_format": "float"}


# -- answers ------------------------------------------------------------------------------


def error_message(body: bytes) -> str:
    """The message of llama-server's (OpenAI-shaped) error body."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body.decode(errors="replace").strip() or "the instance failed"
    err = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(err, dict):
        return str(err.get("message") or err)
    return str(err or doc)


def counts(timings: Any, total_ns: int) -> dict[str, Any]:
    t = timings if isinstance(timings, dict) else {}
    return {
        "total_duration": total_ns,
        "load_duration": 0,
        "prompt_eval_count": int(t.get("prompt_n") or 0),
        "prompt_eval_duration": int(float(t.get("prompt_ms") or 0) * 1e6),
        "eval_count": int(t.get("predicted_n") or 0),
        "eval_duration": int(float(t.get("predicted_ms") or 0) * 1e6),
    }


def tool_calls(calls: Any) -> list[dict[str, Any]]:
    """OpenAI tool calls (arguments as a JSON string) as Ollama's (an object)."""
    out = []
    for c in calls if isinstance(calls, list) else ():
        fn = c.get("function") if isinstance(c, dict) else None
        if not isinstance(fn, dict):
            continue
        args = fn.get("arguments")
        if isinstance(args, str):
            try:
                args = json.loads(args) if args else {}
            except ValueError:
                args = {"arguments": args}
        out.append({"function": {"name": fn.get("name", ""), "arguments": args}})
    return out


def piece(kind: int, model: str, text: str, thinking: str = "") -> dict[str, Any]:
    """One streamed Ollama line that carries text."""
    if kind == CHAT:
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if thinking:
            message["thinking"] = thinking
        return {"model": model, "created_at": iso_now(), "message": message, "done": False}
    line: dict[str, Any] = {"model": model, "created_at": iso_now(), "response": text}
    if thinking:
        line["thinking"] = thinking
    line["done"] = False
    return line


def final(
    kind: int,
    model: str,
    reason: str | None,
    timings: Any,
    total_ns: int,
    text: str = "",
    thinking: str = "",
    calls: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The ``done: true`` line (or a whole answer with ``stream: false``)."""
    line = piece(kind, model, text, thinking)
    if calls and kind == CHAT:
        line["message"]["tool_calls"] = calls
    line["done"] = True
    line["done_reason"] = reason or "stop"
    line.update(counts(timings, total_ns))
    return line


def whole(kind: int, model: str, body: bytes, total_ns: int) -> dict[str, Any]:
    """llama-server's non-streamed answer as Ollama's."""
    doc = json.loads(body)
    if kind in (EMBED, EMBEDDINGS):
        vectors = [d.get("embedding") for d in doc.get("data") or []]
        if kind == EMBEDDINGS:
            return {"embedding": vectors[0] if vectors else []}
        usage = doc.get("usage") or {}
        return {
            "model": model,
            "embeddings": vectors,
            "total_duration": total_ns,
            "load_duration": 0,
            "prompt_eval_count": int(usage.get("prompt_tokens") or 0),
        }
    choice = (doc.get("choices") or [{}])[0]
    if kind == COMPLETE:
        text, thinking, calls = choice.get("text") or "", "", None
    else:
        msg = choice.get("message") or {}
        text = msg.get("content") or ""
        thinking = msg.get("reasoning_content") or ""
        calls = tool_calls(msg.get("tool_calls")) or None
    reason = choice.get("finish_reason")
    return final(kind, model, reason, doc.get("timings"), total_ns, text, thinking, calls)
