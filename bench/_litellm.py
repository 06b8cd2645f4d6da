"""The LiteLLM proxy as a peer of the gateway benchmark: getting it, configuring it in
front of one OpenAI-compatible upstream (a llama-server), starting and stopping it.

LiteLLM runs in its own virtualenv, ``bench/.cache/litellm-venv`` (git-ignored), created
with ``python -m venv`` and ``pip install 'litellm[proxy]'`` when missing, so that its
many dependencies never meet the project's. Each proxy runs in a temporary folder with a
config that routes one model name to ``openai/<model>`` at ``<upstream>/v1``, one uvicorn
worker on 127.0.0.1, no database, no master key (recent releases refuse to start without
one unless ``general_settings.dangerously_permit_weak_or_unset_master_key`` is set, as it
is here: the other peers take no keys either), and everything that logs, reports or
calls back switched off as far as LiteLLM lets it be:

* ``LITELLM_TELEMETRY_DISABLED=true`` (its telemetry veto; ``LITELLM_TELEMETRY=False``
  and ``litellm_settings.telemetry: false`` for older releases);
* ``LITELLM_LOG=ERROR`` (this also sets uvicorn's log level, so no access log);
* ``LITELLM_LOCAL_MODEL_COST_MAP=True``: the bundled cost map instead of fetching one at
  import (without network that fetch retries for several seconds);
* ``DISABLE_ADMIN_UI``, ``NO_DOCS``, ``NO_REDOC``; no callbacks of any kind, no spend or
  error logs, no background health checks;
* ``DATABASE_URL``, ``LITELLM_*``, ``REDIS_*`` and the like are dropped from the
  environment it inherits, and loopback is exempt from any HTTP proxy.

The config file is JSON, which is YAML too, so no YAML writer is needed here.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench_core import BenchError, log

BENCH_DIR = Path(__file__).resolve().parent
LITELLM_VENV = BENCH_DIR / ".cache" / "litellm-venv"
LITELLM_REQUIREMENT = "litellm[proxy]"
INSTALL_TIMEOUT_S = 1200.0
START_TIMEOUT_S = 120.0  # the first start compiles every .pyc of a large package
STOP_TIMEOUT_S = 10.0
POLL_S = 0.1

# Inherited variables that could give the proxy a database, a cache, keys or callbacks.
_DROPPED_PREFIXES = ("LITELLM_", "REDIS_", "DATABASE_", "DIRECT_URL", "PRISMA_", "OTEL_")
_DROPPED_NAMES = ("UI_USERNAME", "UI_PASSWORD", "STORE_MODEL_IN_DB", "WORKER_CONFIG")

_QUIET_ENV = {
    "LITELLM_TELEMETRY_DISABLED": "true",
    "LITELLM_TELEMETRY": "False",
    "LITELLM_LOG": "ERROR",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_DONT_SHOW_FEEDBACK_BOX": "true",
    "DISABLE_ADMIN_UI": "True",
    "NO_DOCS": "True",
    "NO_REDOC": "True",
    "DISABLE_SCHEMA_UPDATE": "true",
    "STORE_MODEL_IN_DB": "False",
    "PYTHONUNBUFFERED": "1",
}


def _venv_exe(name: str) -> Path:
    return LITELLM_VENV / "bin" / name


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ensure_litellm(no_install: bool = False) -> Path:
    """The ``litellm`` executable of ``bench/.cache/litellm-venv``; the venv is created
    and ``litellm[proxy]`` installed into it when missing, unless ``no_install``."""
    exe = _venv_exe("litellm")
    if exe.is_file() and os.access(exe, os.X_OK):
        return exe
    if no_install:
        raise BenchError(
            f"LiteLLM is not installed in {LITELLM_VENV} (--no-install); create it with: "
            f"python -m venv {LITELLM_VENV} && "
            f"{_venv_exe('python')} -m pip install '{LITELLM_REQUIREMENT}'"
        )
    python = _venv_exe("python")
    t0 = time.monotonic()
    if not python.is_file():
        log(f"creating {LITELLM_VENV}: python -m venv")
        LITELLM_VENV.parent.mkdir(parents=True, exist_ok=True)
        out = _run([sys.executable, "-m", "venv", str(LITELLM_VENV)], timeout=300)
        if out.returncode != 0:
            raise BenchError(f"python -m venv {LITELLM_VENV} failed: {out.stderr.strip()[-500:]}")
    log(f"installing LiteLLM into {LITELLM_VENV}: pip install '{LITELLM_REQUIREMENT}' (minutes)")
    out = _run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         LITELLM_REQUIREMENT],
        timeout=INSTALL_TIMEOUT_S,
    )  # fmt: skip
    if out.returncode != 0:
        raise BenchError(f"pip install '{LITELLM_REQUIREMENT}' failed: {out.stderr.strip()[-500:]}")
    if not exe.is_file():
        raise BenchError(f"pip install '{LITELLM_REQUIREMENT}' left no {exe}")
    log(f"LiteLLM installed in {time.monotonic() - t0:.0f} s: {litellm_version()}")
    return exe


def litellm_version() -> str:
    """``litellm X.Y.Z`` as installed in the venv (from its dist-info, no import)."""
    for meta in sorted(LITELLM_VENV.glob("lib/python*/site-packages/litellm-*.dist-info/METADATA")):
        for line in meta.read_text(errors="replace").splitlines():
            if line.startswith("Version:"):
                return f"litellm {line.split(':', 1)[1].strip()}"
    python = _venv_exe("python")
    if python.is_file():
        out = _run([str(python), "-c", "from importlib.metadata import version as v; "
                    "print(v('litellm'))"], timeout=60)  # fmt: skip
        if out.returncode == 0 and out.stdout.strip():
            return f"litellm {out.stdout.strip()}"
    return "litellm (unknown version)"


def litellm_config(upstream_url: str, model: str) -> dict[str, Any]:
    """The proxy's config: ``model`` routed to ``openai/<model>`` at ``<upstream>/v1``."""
    return {
        "model_list": [
            {
                "model_name": model,
                "litellm_params": {
                    "model": f"openai/{model}",
                    "api_base": upstream_url.rstrip("/") + "/v1",
                    "api_key": "none",
                },
            }
        ],
        "litellm_settings": {
            "telemetry": False,
            "set_verbose": False,
            "json_logs": False,
            "turn_off_message_logging": True,
            "callbacks": [],
            "success_callback": [],
            "failure_callback": [],
            "service_callback": [],
            "drop_params": True,
            "num_retries": 0,
            "request_timeout": 600,
        },
        "router_settings": {"num_retries": 0},
        "general_settings": {
            "disable_spend_logs": True,
            "disable_error_logs": True,
            "disable_spend_updates": True,
            "disable_reset_budget": True,
            "store_model_in_db": False,
            "background_health_checks": False,
            "allow_requests_on_db_unavailable": True,
            # no master key, as the other peers run without keys; recent releases refuse
            # to start without one unless told (the proxy listens on loopback only)
            "dangerously_permit_weak_or_unset_master_key": True,
        },
    }


def _proxy_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_DROPPED_PREFIXES) and k not in _DROPPED_NAMES
    }
    env.update(_QUIET_ENV)
    no_proxy = ",".join(x for x in (env.get("NO_PROXY"), "127.0.0.1,localhost") if x)
    env["NO_PROXY"] = env["no_proxy"] = no_proxy
    return env


def _status(port: int, path: str) -> int | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except OSError:
        return None
    finally:
        conn.close()


def _tail(path: Path, n: int = 1500) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-n:].strip()
    return ""


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the proxy's process group, SIGKILL after STOP_TIMEOUT_S."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(STOP_TIMEOUT_S)
    with contextlib.suppress(ProcessLookupError):  # its group, even once the leader is gone
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


@contextlib.contextmanager
def litellm_proxy(upstream_url: str, model: str, port: int) -> Iterator[str]:
    """``litellm --config CONFIG --port PORT --host 127.0.0.1`` in a temporary folder,
    routing ``model`` to the OpenAI-compatible ``upstream_url``; yields its base URL
    (``http://127.0.0.1:PORT``) once ``GET /health/liveliness`` answers 200. The proxy's
    process group is stopped (SIGTERM, then SIGKILL) and the folder removed on the way
    out, whatever happens."""
    exe = ensure_litellm(no_install=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-litellm-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        config = tmp / "config.yaml"
        config.write_text(json.dumps(litellm_config(upstream_url, model), indent=2) + "\n")
        logfile = tmp / "litellm.log"
        argv = [str(exe), "--config", str(config), "--port", str(port), "--host", "127.0.0.1"]
        with open(logfile, "wb") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=tmp,
                env=_proxy_env(),
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while _status(port, "/health/liveliness") != 200:
            if proc.poll() is not None:
                raise BenchError(
                    f"litellm exited with {proc.returncode} before answering on port "
                    f"{port}:\n{_tail(logfile)}"
                )
            if time.monotonic() > deadline:
                raise BenchError(
                    f"litellm did not answer /health/liveliness within {START_TIMEOUT_S:g} s:"
                    f"\n{_tail(logfile)}"
                )
            time.sleep(POLL_S)
        yield f"http://127.0.0.1:{port}"
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)
