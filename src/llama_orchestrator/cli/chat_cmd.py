"""``llama-orch chat NAME "prompt"``: try an instance in one command.

The request goes through the daemon's gateway (so a stopped instance is started on
demand, and the gateway's keys apply), as ``/v1/completions`` by default since local
models are often base models, or ``/v1/chat/completions`` with ``--chat``. The text is
streamed to stdout as it arrives; the token count and speed go to stderr.
"""

from __future__ import annotations

import re
import sys
from typing import Annotated, Any

import typer

from llama_orchestrator.cli.common import (
    EXIT_USAGE,
    daemon_client,
    fail,
    home_of,
    one_line,
    quiet_exit,
    say,
)

EXIT_INTERRUPTED = 130
# What a model may emit that a terminal would act on (escape sequences, bells...); shown
# escaped on a terminal, passed on unchanged to a file or a pipe.
_TERMINAL_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _gateway(home: Any) -> tuple[str, int]:
    """The gateway's URL and how many API keys it has; exit 1 when it does not listen."""
    client = daemon_client(home)
    try:
        reply = client.get("/v1/gateway", timeout=10)
    except OSError as e:
        fail(f"lost the daemon ({e}); see {home.daemon_log_path}")
    info = reply.body if reply.ok and isinstance(reply.body, dict) else None
    if info is None:
        fail(f"the daemon did not say where its gateway is (HTTP {reply.status})")
    if not info.get("listening") or not info.get("url"):
        where = f" on {info['url']}" if info.get("url") else ""
        reason = info.get("reason") or info.get("error") or "unknown reason"
        fail(f"the gateway is not listening{where}: {one_line(str(reason))}")
    return str(info["url"]), int(info.get("keys") or 0)


def _write(text: str) -> None:
    if sys.stdout.isatty():
        text = _TERMINAL_CONTROL.sub(lambda m: repr(m.group())[1:-1], text)
    out = sys.stdout.buffer
    out.write(text.encode("utf-8", "replace"))
    out.flush()


app = typer.Typer()


@app.command()
def chat(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Instance name (or a gateway alias).")],
    prompt: Annotated[str, typer.Argument(help="The prompt; '-' reads it from stdin.")],
    max_tokens: Annotated[
        int,
        typer.Option("--max-tokens", "-n", min=1, help="The most tokens to generate."),
    ] = 128,
    as_chat: Annotated[
        bool,
        typer.Option("--chat", help="Use /v1/chat/completions (the model's chat template)."),
    ] = False,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="LLAMA_ORCH_API_KEY",
            help="A key of the gateway (when gateway.json sets api_keys).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Send a prompt through the gateway and stream the answer as it arrives.

    A completion by default (good for base models); --chat for a chat model. A
    stopped instance is started on demand. Tokens/s go to stderr.

    Examples: llama-orch chat gemma "The capital of France is"; llama-orch chat gemma
    "Write a haiku" --chat -n 64
    """
    from llama_orchestrator.client.completion import CompletionError, stream

    if not name.strip():
        fail("name an instance", EXIT_USAGE)
    if prompt == "-":
        prompt = sys.stdin.read()
    if not prompt.strip():
        fail("empty prompt: give the text to send, or '-' to read it from stdin", EXIT_USAGE)
    home = home_of(ctx)
    url, keys = _gateway(home)
    if keys and not api_key:
        fail(
            f"the gateway at {url} needs an API key: pass --api-key KEY or set "
            "LLAMA_ORCH_API_KEY (its keys are in gateway.json)"
        )
    echo = _Echo()
    try:
        result = stream(
            url,
            name,
            prompt,
            max_tokens=max_tokens,
            chat=as_chat,
            api_key=api_key,
            on_text=echo.show,
        )
    except KeyboardInterrupt:
        echo.end_line()
        say("interrupted")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except BrokenPipeError:
        raise quiet_exit() from None
    except CompletionError as e:
        echo.end_line()
        fail(f"{name}: {one_line(str(e))}")
    except OSError as e:
        echo.end_line()
        fail(f"lost the gateway at {url} ({e.strerror or e})")
    echo.end_line()
    n = result.tokens or 0
    speed = f"{result.tokens_per_s:.1f}" if result.tokens_per_s is not None else "-"
    say(f"{n} token{'' if n == 1 else 's'} at {speed} tokens/s ({result.seconds:.2f}s in all)")


class _Echo:
    """Writes the answer's text as it arrives, and remembers whether a line is open, so
    that what is said next (an error, the speed) starts on a line of its own."""

    def __init__(self) -> None:
        self.ended_line = True

    def show(self, text: str) -> None:
        _write(text)
        self.ended_line = text.endswith("\n")

    def end_line(self) -> None:
        if not self.ended_line:
            _write("\n")
