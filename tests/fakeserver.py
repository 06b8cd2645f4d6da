"""A fake llama-server with knobs, for faults a real server cannot be made to show.

Takes llama-server's flags (only ``--port``/``--host`` matter) and these environment knobs:

* ``FAKE_LOAD_DELAY`` seconds of 503 "Loading model" before /health answers 200
* ``FAKE_IGNORE_SIGTERM=1`` keep running after SIGTERM (only SIGKILL ends it)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

START = time.monotonic()
LOAD_DELAY = float(os.environ.get("FAKE_LOAD_DELAY", "0"))


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path in ("/health", "/v1/health"):
            if time.monotonic() - START < LOAD_DELAY:
                self._send(503, {"error": {"code": 503, "message": "Loading model"}})
            else:
                self._send(200, {"status": "ok"})
        else:
            self._send(404, {"error": "not found"})

    def _send(self, code: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt: str, *args: object) -> None:
        sys.stderr.write(fmt % args + "\n")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    args, _unknown = p.parse_known_args()
    if os.environ.get("FAKE_IGNORE_SIGTERM") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"fake server on {args.host}:{args.port}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
