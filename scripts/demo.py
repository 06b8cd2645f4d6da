"""``make demo``: two instances of a generated tiny model on the embedded engine.

Generates a ~470 KB GGUF model, creates two instances in ``.demo/home``, starts them with
``llama-orch up``, shows ``llama-orch ps``, asks each for a chat completion, and stops
them again (pass ``--keep`` to leave them running).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx

from llama_orchestrator.testing.tinymodel import write_tiny_model

ROOT = Path(__file__).resolve().parent.parent
HOME = ROOT / ".demo" / "home"


def orch(*args: str, check: bool = True, show: bool = True) -> subprocess.CompletedProcess[str]:
    if show:
        print(f"\n$ llama-orch {' '.join(args)}", flush=True)
    env = dict(os.environ, LLAMA_ORCH_HOME=str(HOME), LLAMA_SERVER="embedded")
    cmd = [sys.executable, "-m", "llama_orchestrator", *args]
    out = subprocess.run(cmd, env=env, text=True, capture_output=True, check=False)
    if show:
        sys.stdout.write(out.stdout)
        sys.stdout.write(out.stderr)
    sys.stdout.flush()
    if check and out.returncode != 0:
        raise SystemExit(out.returncode)
    return out


def main() -> int:
    keep = "--keep" in sys.argv
    if HOME.exists():  # a previous demo: stop what it left, start afresh
        orch("down", "--all", check=False)
        orch("daemon", "stop", check=False)
        shutil.rmtree(HOME)
    model = write_tiny_model(HOME.parent / "models" / "tiny.gguf")
    print(f"generated test model {model} ({model.stat().st_size // 1024} KB)")
    orch("create", "chat-a", "--model", str(model))
    orch("create", "chat-b", "--model", str(model))
    orch("config", "validate", "--all")
    orch("up", "--all")
    orch("ps")
    for row in json.loads(orch("ps", "--json", show=False).stdout):
        url = f"http://127.0.0.1:{row['port']}/v1/chat/completions"
        body = {"messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 8}
        r = httpx.post(url, json=body, timeout=60, trust_env=False)
        r.raise_for_status()
        reply = r.json()["choices"][0]["message"]["content"]
        print(f"\n{row['name']} (port {row['port']}) answered a chat completion: {reply!r}")
        print("  (random bytes: the demo model has random weights)")
    if keep:
        print(f"\nleft running; stop with: LLAMA_ORCH_HOME={HOME} llama-orch down --all")
        return 0
    orch("down", "--all")
    orch("daemon", "stop")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
