"""Everything that can be checked before a server is spawned, as a refusal with a reason.

A refusal names the file, the field, the value and what to do, exactly as ``config
validate`` would; it never raises. The actor turns a refusal of an automatic restart
into a counted failed attempt.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llama_orchestrator.config.gateway import device_key
from llama_orchestrator.config.loader import ConfigError, LoadedConfig, UnknownInstance
from llama_orchestrator.daemon.actor.messages import Outcome, Prepared, Report
from llama_orchestrator.daemon.offload import Offload
from llama_orchestrator.daemon.placement import placed_config
from llama_orchestrator.daemon.scheduler import Claim
from llama_orchestrator.doctor.modelfile import model_file_problem
from llama_orchestrator.doctor.ports import port_holder
from llama_orchestrator.engine.binary import BinaryError, ResolvedBinary, resolve_binary
from llama_orchestrator.engine.command import (
    SLOT_SAVE_FLAG,
    LaunchSpec,
    base_url,
    device_label,
    launch_spec,
)
from llama_orchestrator.engine.process import ServerProcess
from llama_orchestrator.errors import ErrorCode
from llama_orchestrator.home import Home

Post = Callable[[Report], None]


@dataclass(frozen=True)
class Plan:
    """A start that passed every check: what to run."""

    loaded: LoadedConfig
    binary: ResolvedBinary
    spec: LaunchSpec

    def record(self, proc: ServerProcess, now: float) -> dict[str, Any]:
        """The state-store fields of a server just spawned from this plan."""
        cfg = self.loaded.config
        return {
            "pid": proc.pid,
            "pid_create_time": proc.identity.create_time,
            "cmdline": self.spec.argv,
            "host": cfg.server.host,
            "port": cfg.server.port,
            "backend": cfg.gpu.backend,
            "device": device_label(cfg.gpu.backend, cfg.gpu.device_id),
            "model": str(self.loaded.model_path),
            "binary": self.binary.display,
            "start_time": now,
            "ready_time": None,
            "exit_code": None,
            "exit_signal": None,
            "last_error": None,
            "config_hash": self.loaded.raw_hash,
        }

    @property
    def url(self) -> str:
        server = self.loaded.config.server
        return base_url(server.host, server.port)

    def placed(self, device_id: int, home_root: Path) -> Plan:
        """This plan on device ``device_id`` (an ``auto`` instance, placed): its config
        says that device, and its command line and environment select it."""
        loaded = placed_config(self.loaded, device_id)
        return Plan(loaded, self.binary, launch_spec(loaded, self.binary, home_root))

    def claim(self, name: str, *, force: bool = False) -> Claim:
        """What the start would hold: its address, and its memory by ``fit``'s estimate."""
        server = self.loaded.config.server
        # an ``auto`` one is placed on the devices its binary lists, as it numbers them
        binary = tuple(self.binary.argv_prefix) if self.loaded.config.gpu.auto else ()
        where = (server.host, server.port)
        return Claim(name, where, memory_mb(self.loaded), force=force, binary=binary)


@dataclass(frozen=True)
class RemotePlan:
    """A remote instance's start (issue 13): where to probe and route, with the key
    read from the daemon's environment at this start. Nothing is spawned, and the
    scheduler is not asked: it uses none of this machine's memory, counts against no
    budget or ``max_running``, and is never evicted or stopped for being idle."""

    loaded: LoadedConfig
    url: str
    api_key: str | None

    def record(self, proc: ServerProcess, now: float) -> dict[str, Any]:
        remote = self.loaded.remote
        assert remote is not None
        return {
            "pid": None,
            "pid_create_time": None,
            "cmdline": None,
            "host": remote.host,
            "port": remote.port,
            "backend": "remote",
            "device": "-",
            "model": str(self.loaded.model_path),  # its address: ps's MODEL column
            "binary": None,
            "start_time": now,
            "ready_time": None,
            "exit_code": None,
            "exit_signal": None,
            "last_error": None,
            "config_hash": self.loaded.raw_hash,
        }


def remote_plan(loaded: LoadedConfig, env: dict[str, str] | None = None) -> RemotePlan | Outcome:
    """A remote start, or its refusal when the key's variable is not set."""
    remote = loaded.remote
    assert remote is not None
    key = None
    if remote.api_key_env is not None:
        key = (os.environ if env is None else env).get(remote.api_key_env)
        if not key:
            return refusal(
                ErrorCode.CONFIG_INVALID,
                f"{loaded.path}: remote.api_key_env: the environment variable "
                f"{remote.api_key_env} is not set in the daemon's environment; set it where "
                "the daemon runs (`llama-orch daemon stop`, then `up` again), or remove "
                "api_key_env",
            )
        if not (key.isascii() and key.isprintable()) or " " in key:
            return refusal(
                ErrorCode.CONFIG_INVALID,
                f"{loaded.path}: remote.api_key_env: the value of {remote.api_key_env} is not "
                "a key that can be sent in a header (printable ASCII without spaces)",
            )
    return RemotePlan(loaded, remote.base_url, key)


def memory_mb(loaded: LoadedConfig) -> dict[str, int]:
    """``{device key: MiB}`` an instance is estimated to use: ``fit``'s estimate
    (weights of the offloaded layers + KV cache + compute buffer) on its GPU, and what
    stays on the host (the layers left on the CPU, host buffers) against ``cpu``, so a
    host budget means something for a mixed offload (issue 18); all of it against
    ``cpu`` for a CPU instance. The scheduler adds each device's per-process overhead
    (daemon/overheads.py). Empty when the model cannot be read (but for an ``auto``
    instance's ``<backend>:auto`` key, at 0: it is placed all the same, issue 7)."""
    from llama_orchestrator.doctor.estimate import config_estimate

    gpu = loaded.config.gpu
    # an ``auto`` instance always asks to be placed, even with nothing known to put there
    unplaced = {device_key(gpu.backend, gpu.device_id): 0} if gpu.auto else {}
    try:
        st = os.stat(loaded.model_path)
    except OSError:
        return unplaced
    # the device too: an ``auto`` config placed has the file's hash (issue 7)
    device = str(loaded.config.gpu.device_id)
    key = (loaded.raw_hash, str(loaded.model_path), device, st.st_mtime_ns, st.st_size)
    found = _ESTIMATES.get(key)
    if found is None:
        try:
            est = config_estimate(loaded)
        except (OSError, ValueError):  # GGUFError is a ValueError
            return unplaced
        if gpu.backend == "cpu" or est.gpu_layers == 0:
            found = {**unplaced, "cpu": -(-est.total // 2**20)}
        else:
            found = {
                device_key(gpu.backend, gpu.device_id): -(-est.device_total // 2**20),
                "cpu": -(-est.host_total // 2**20),
            }
        if len(_ESTIMATES) > 256:
            _ESTIMATES.clear()
        _ESTIMATES[key] = found
    return dict(found)


_ESTIMATES: dict[tuple[str, str, str, int, int], dict[str, int]] = {}


def refusal(code: ErrorCode, message: str, problems: list[dict[str, Any]] | None = None) -> Outcome:
    return Outcome(False, message, error=code, problems=problems or [])


Current = LoadedConfig | ConfigError | None  # daemon/configs.py: what its file holds now


def load(home: Home, name: str, current: Current) -> LoadedConfig | Outcome:
    """The config a start runs with (the daemon's Configs read it), or the refusal."""
    if current is None:
        unknown = UnknownInstance(name, home.instance_names())
        return refusal(ErrorCode.UNKNOWN_INSTANCE, str(unknown))
    if isinstance(current, ConfigError):
        return refusal(
            ErrorCode.CONFIG_INVALID,
            f"invalid config:\n{current}",
            problems=[p.to_dict() for p in current.problems],
        )
    return current


def port_problem(loaded: LoadedConfig) -> Outcome | None:
    server = loaded.config.server
    try:
        holder = port_holder(server.host, server.port)
    except OSError as e:  # an unknown host name, an address that is not on this machine
        reason = e.strerror or str(e)
        return refusal(
            ErrorCode.HOST,
            f"{loaded.path}: server.host: cannot listen on {server.host!r} here ({reason}); "
            "use a local address such as 127.0.0.1 or 0.0.0.0",
        )
    if holder is None:
        return None
    return refusal(
        ErrorCode.PORT_IN_USE,
        f"port {server.port} is already in use by {holder}; "
        f"choose another server.port in {loaded.path}",
    )


def prepare(home: Home, name: str, current: Current) -> Plan | RemotePlan | Outcome:
    """A ``Plan`` to spawn, or the ``Outcome`` that refuses the start.

    Another instance of ours on the same port is the scheduler's to refuse (it knows
    which ones hold their port now, daemon/scheduler.py); here the port is only tried.
    """
    loaded = load(home, name, current)
    if isinstance(loaded, Outcome):
        return loaded
    if loaded.remote is not None:
        return remote_plan(loaded)
    problem = model_file_problem(loaded.model_path)
    if problem:
        return refusal(
            ErrorCode.MODEL, f"{loaded.path}: model.path: {problem} ({loaded.model_path})"
        )
    taken = port_problem(loaded)
    if taken is not None:
        return taken
    try:
        binary = resolve_binary(loaded.config.binary, home, config_dir=loaded.path.parent)
    except BinaryError as e:
        return refusal(ErrorCode.BINARY, str(e))
    return Plan(loaded, binary, launch_spec(loaded, binary, home.root))


def prepare_start(home: Home, name: str, current: Current) -> Plan | RemotePlan | Outcome:
    """``prepare``, and the memory estimate the scheduler's claim will ask for (it reads
    the GGUF header once per model file; ``memory_mb`` keeps it): all of a start's
    blocking work, for a thread."""
    plan = prepare(home, name, current)
    if isinstance(plan, Plan):
        memory_mb(plan.loaded)
    return plan


async def preflight(
    offload: Offload, home: Home, name: str, current: Current, generation: int, post: Post
) -> None:
    """The actor's side task for a start's checks: they read files, resolve the host,
    probe the port and list the machine's sockets, so they run off the loop, and post
    their result (issue 17). ``current``: the config, as the daemon's Configs read it."""
    post(Prepared(generation, await offload(lambda: prepare_start(home, name, current))))


def spawn_error(spec: LaunchSpec, e: OSError) -> str:
    """Why a spawn failed, naming the log file when that was the cause."""
    logs: set[str] = set()
    for p in (spec.stdout, spec.stderr):
        logs |= {str(p), str(Path(p).parent)}
    if e.filename is not None and str(e.filename) in logs:
        return f"cannot write log file {e.filename}: {e.strerror} (see logs in the config)"
    folder = slot_folder(spec.argv)
    if e.filename is not None and folder is not None and folder.startswith(str(e.filename)):
        return (
            f"cannot create the slot save folder {folder} ({e.strerror} at {e.filename}): "
            "move aside what is there, or set gateway.kv_cache to false"
        )
    return f"cannot start {spec.argv[0]}: {e}"


def slot_folder(argv: Sequence[str]) -> str | None:
    """The ``--slot-save-path`` of a command line, if it has one."""
    for i, arg in enumerate(argv[:-1]):
        if arg == SLOT_SAVE_FLAG:
            return argv[i + 1]
    return None
