"""Serve the gateway in front of servers that are already running.

    python -m llama_orchestrator.gateway --upstream chat=http://127.0.0.1:8001 \\
        --upstream chat2=http://127.0.0.1:8002,slots=4,aliases=chat --port 8080

The daemon mounts the same ``Gateway`` over its own instances; this entry point is for
fronting servers it does not own, and for measuring the gateway alone.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from llama_orchestrator.gateway.app import Gateway
from llama_orchestrator.gateway.loop import new_event_loop
from llama_orchestrator.gateway.settings import GatewaySettings
from llama_orchestrator.gateway.static import StaticDirectory, StaticInstance


def parse_upstream(spec: str) -> StaticInstance:
    """``NAME=URL[,slots=N][,aliases=A+B]``"""
    name, sep, rest = spec.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=URL[,slots=N][,aliases=A+B], got {spec!r}")
    url, *options = rest.split(",")
    slots = 1
    aliases: tuple[str, ...] = ()
    for opt in options:
        key, _, value = opt.partition("=")
        if key == "slots":
            slots = int(value)
        elif key == "aliases":
            aliases = tuple(a for a in value.split("+") if a)
        else:
            raise argparse.ArgumentTypeError(f"unknown upstream option {key!r} in {spec!r}")
    return StaticInstance(name, url, slots=slots, aliases=aliases)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m llama_orchestrator.gateway")
    p.add_argument("--upstream", action="append", type=parse_upstream, default=[], required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--api-key", action="append", default=[])
    p.add_argument("--no-uvloop", action="store_true", help="run on the standard asyncio loop")
    args = p.parse_args(argv)
    settings = GatewaySettings(host=args.host, port=args.port, api_keys=tuple(args.api_key))
    gateway = Gateway(StaticDirectory(args.upstream), settings)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):
                signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))
        await gateway.start()
        print(f"gateway listening on {gateway.url}", file=sys.stderr, flush=True)
        await stop.wait()
        await gateway.close()

    loop = new_event_loop(uvloop=not args.no_uvloop)
    try:
        loop.run_until_complete(serve())
    except OSError as e:
        print(f"gateway: {e.strerror or e}", file=sys.stderr)
        return 1
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
