"""A fake llama-server with knobs, for faults a real server cannot be made to show.

Takes llama-server's flags (only ``--port``/``--host``/``--version`` matter; the rest are
ignored) and serves ``/health`` (``/v1/health``), ``/v1/completions`` and
``/v1/chat/completions`` with llama-server's answers. Environment knobs:

* ``FAKE_LOAD_DELAY`` seconds of 503 "Loading model" before /health answers 200
* ``FAKE_IGNORE_SIGTERM=1`` keep running after SIGTERM (only SIGKILL ends it)
* ``FAKE_COMPLETIONS_FAIL=1`` /health says 200 but every completion answers 500
  (the field failure of llama-swap #125)
* ``FAKE_CRASH_AFTER=N`` exit abruptly (code 3, no clean-up) on receiving request N+1
* ``FAKE_HANG=1`` accept connections but never answer any request (a deadlock);
  ``FAKE_HANG_AFTER=N`` answer the first N requests normally, then hang
* ``FAKE_STREAM_SHORT=1`` a streaming request (``"stream": true``) gets a 200 event stream
  that ends cleanly after one event, without its final ``data: [DONE]``
* ``FAKE_FAULT_ONCE=<path>`` the knobs above apply only to the first process started
  with this path (it creates the file); later processes run clean, so a restart heals

``--version`` prints ``version: 0 (fake)`` to stderr and exits, as llama-server does
(the orchestrator asks every binary for its version).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

START = time.monotonic()


@dataclass(frozen=True)
class Knobs:
    load_delay: float = 0.0
    ignore_sigterm: bool = False
    completions_fail: bool = False
    crash_after: int | None = None
    hang_after: int | None = None
    stream_short: bool = False

    @classmethod
    def from_env(cls) -> Knobs:
        once = os.environ.get("FAKE_FAULT_ONCE")
        if once:
            try:
                os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return cls()  # an earlier process had the faults; this one runs clean
        env = os.environ.get
        hang_after = env("FAKE_HANG_AFTER")
        crash_after = env("FAKE_CRASH_AFTER")
        return cls(
            load_delay=float(env("FAKE_LOAD_DELAY", "0")),
            ignore_sigterm=env("FAKE_IGNORE_SIGTERM") == "1",
            completions_fail=env("FAKE_COMPLETIONS_FAIL") == "1",
            crash_after=int(crash_after) if crash_after else None,
            hang_after=0 if env("FAKE_HANG") == "1" else int(hang_after) if hang_after else None,
            stream_short=env("FAKE_STREAM_SHORT") == "1",
        )


KNOBS = Knobs()
_count_lock = threading.Lock()
_requests = 0


def _next_request() -> int:
    """How many requests came before this one (thread-safe)."""
    global _requests
    with _count_lock:
        n = _requests
        _requests += 1
    return n


class Handler(BaseHTTPRequestHandler):
    def _faults(self) -> None:
        n = _next_request()
        if KNOBS.crash_after is not None and n >= KNOBS.crash_after:
            sys.stderr.write(f"fake server: crashing on request {n + 1}\n")
            sys.stderr.flush()
            os._exit(3)
        if KNOBS.hang_after is not None and n >= KNOBS.hang_after:
            threading.Event().wait()  # never answer; the connection stays open

    def do_GET(self) -> None:
        self._faults()
        if self.path in ("/health", "/v1/health"):
            if time.monotonic() - START < KNOBS.load_delay:
                self._send(503, {"error": {"code": 503, "message": "Loading model"}})
            else:
                self._send(200, {"status": "ok"})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        self._faults()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path not in ("/v1/completions", "/v1/chat/completions"):
            self._send(404, {"error": "not found"})
        elif time.monotonic() - START < KNOBS.load_delay:
            self._send(503, {"error": {"code": 503, "message": "Loading model"}})
        elif KNOBS.completions_fail:
            msg = "fake server: inference failed"
            self._send(500, {"error": {"code": 500, "message": msg, "type": "server_error"}})
        elif KNOBS.stream_short and b'"stream": true' in body.replace(b'":true', b'": true'):
            self._short_stream()
        elif self.path == "/v1/completions":
            self._send(200, {"object": "text_completion", "choices": [_choice(text="x")]})
        else:
            message = {"role": "assistant", "content": "x"}
            self._send(200, {"object": "chat.completion", "choices": [_choice(message=message)]})

    def _short_stream(self) -> None:
        """One event, then a clean chunked end: no ``[DONE]`` (a server that gave up)."""
        self.protocol_version = "HTTP/1.1"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        delta = {"index": 0, "delta": {"content": "x"}, "finish_reason": None}
        data = b"data: " + json.dumps({"choices": [delta]}).encode() + b"\n\n"
        self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data))
        self.wfile.flush()
        self.close_connection = True

    def _send(self, code: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt: str, *args: object) -> None:
        sys.stderr.write(fmt % args + "\n")


def _choice(**fields: object) -> dict[str, object]:
    return {"index": 0, "finish_reason": "length", **fields}


def main() -> None:
    global KNOBS
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--version", action="store_true")
    args, _unknown = p.parse_known_args()
    if args.version:
        print("version: 0 (fake)", file=sys.stderr)
        return
    KNOBS = Knobs.from_env()
    if KNOBS.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    server = ThreadingHTTPServer((args.host, args.port), Handler)  # daemon threads
    print(f"fake server on {args.host}:{args.port} ({KNOBS})", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
