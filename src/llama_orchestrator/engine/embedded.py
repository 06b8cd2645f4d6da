"""The embedded engine: a ``llama-server`` stand-in serving through the xllamacpp wheel.

xllamacpp embeds llama.cpp's own C++ HTTP server, so this runner answers the same
``/health`` and OpenAI routes as the real binary. It takes the subset of llama-server's
flags that the orchestrator builds, and refuses any other flag by name so a config that
needs a real llama-server says so instead of silently running without it.

    python -m llama_orchestrator.engine.embedded -m model.gguf --port 8001 ...

It runs until SIGTERM/SIGINT (Windows: CTRL_BREAK), then releases the server and exits 0.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Any, NoReturn


def engine_version() -> str:
    from importlib.metadata import version

    return f"xllamacpp {version('xllamacpp')}"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        print(
            f"embedded engine: {message}\n"
            "The embedded engine supports: -m -c -b -t --host --port -to -np -ngl -dev -a "
            "--embeddings --pooling --metrics --slots --slot-save-path --swa-full --api-key "
            "--list-devices --version. "
            "Set the instance's 'binary' to a real llama-server for other flags.",
            file=sys.stderr,
        )
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="llama-server (embedded)", add_help=True)
    p.add_argument("-m", "--model")
    p.add_argument("-c", "--ctx-size", type=int, default=4096)
    p.add_argument("-b", "--batch-size", type=int, default=2048)
    p.add_argument("-t", "--threads", type=int, default=-1)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("-to", "--timeout", type=int, default=600)
    p.add_argument("-np", "--parallel", type=int, default=1)
    p.add_argument("-ngl", "--gpu-layers", "--n-gpu-layers", default="0")
    p.add_argument("-dev", "--device", default=None)
    p.add_argument("-a", "--alias", default=None)
    p.add_argument("--metrics", action="store_true")
    # /v1/embeddings (issue 20: a config with --embeddings used to pass lint, then fail
    # to start here).
    p.add_argument("--embedding", "--embeddings", dest="embedding", action="store_true")
    p.add_argument("--pooling", choices=POOLING, default=None)
    p.add_argument("--slots", action="store_true")
    p.add_argument("--no-slots", action="store_true")
    p.add_argument("--slot-save-path", default=None)
    p.add_argument("--swa-full", action="store_true")
    p.add_argument("--api-key", default=None)
    p.add_argument("--list-devices", action="store_true")
    p.add_argument("--version", action="store_true")
    return p


POOLING = ("none", "mean", "cls", "last", "rank")


def _list_devices() -> int:
    import xllamacpp

    print("Available devices:")
    devices = [
        d
        for d in xllamacpp.get_device_info()
        if not getattr(d.get("type"), "name", "").endswith("CPU")
    ]
    if not devices:
        print("  (none)")
    for d in devices:
        total = int(d.get("memory_total", 0)) // (1024 * 1024)
        free = int(d.get("memory_free", 0)) // (1024 * 1024)
        print(f"  {d.get('name')}: {d.get('description')} ({total} MiB, {free} MiB free)")
    return 0


def _aliases(value: str) -> list[str]:
    """``-a`` as llama-server reads it: one name, or several separated by commas."""
    return [a.strip() for a in value.split(",") if a.strip()]


def build_params(args: argparse.Namespace) -> Any:
    """xllamacpp's ``CommonParams`` for the parsed flags."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.n_ctx = args.ctx_size
    params.n_batch = args.batch_size
    if args.threads > 0:
        params.cpuparams.n_threads = args.threads
        params.cpuparams_batch.n_threads = args.threads
    params.hostnames = [args.host]
    params.port = args.port
    params.timeout_read = args.timeout
    params.timeout_write = args.timeout
    params.n_parallel = args.parallel
    params.n_gpu_layers = -1 if args.gpu_layers in ("all", "auto") else int(args.gpu_layers)
    params.endpoint_metrics = args.metrics
    params.endpoint_slots = not args.no_slots
    if args.slot_save_path:
        params.slot_save_path = args.slot_save_path
    params.swa_full = args.swa_full
    params.embedding = args.embedding
    if args.pooling is not None:
        pooling = xllamacpp.llama_pooling_type
        params.pooling_type = getattr(pooling, f"LLAMA_POOLING_TYPE_{args.pooling.upper()}")
    if args.alias:
        # A set of names in current builds: a string given there became its letters
        # (issue 10); older builds took one string.
        names = _aliases(args.alias)
        current = params.model_alias
        params.model_alias = ",".join(names) if isinstance(current, str) else set(names)
    if args.api_key:
        params.api_keys = [args.api_key]
    return params


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.version:
        print(f"version: {engine_version()} (embedded)", file=sys.stderr)
        return 0
    if args.list_devices:
        return _list_devices()
    if not args.model:
        print("embedded engine: -m/--model is required", file=sys.stderr)
        return 2

    stop = threading.Event()

    def _on_signal(signum: int, frame: Any) -> None:
        stop.set()  # only record; the main thread acts

    for sig in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGBREAK", None)):
        if sig is not None:
            signal.signal(sig, _on_signal)

    import xllamacpp

    params = build_params(args)
    try:
        server = xllamacpp.Server(params)
    except Exception as e:  # the engine's own reason, e.g. a model that fails to load
        print(f"embedded engine: failed to start: {e}", file=sys.stderr, flush=True)
        return 1
    print(
        f"embedded engine: listening on http://{args.host}:{args.port}", file=sys.stderr, flush=True
    )
    while not stop.wait(0.5):
        pass
    _exit_now(server)


def _exit_now(_server: object) -> NoReturn:
    """End the process without releasing the server.

    xllamacpp's release waits, holding the GIL, until the answer being generated is
    complete, so a stop during a stream waited the whole ``stop_timeout`` and ended in
    SIGKILL (issue 19, item 11), where the real llama-server cuts the stream and exits
    within a second. Nothing the release does outlives the process (memory, sockets and
    GPU contexts are the OS's and the driver's to free), so the process exits at once,
    with code 0 as the real server's does; the streams in flight are cut.
    """
    print("embedded engine: stopping", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    raise SystemExit(main())
