"""``config validate`` and ``config lint``: what is wrong with a set of configs (issue 2, part 4).

``validate`` answers "can these configs be started?" with :class:`Problem` lines
(schema, folder name, model file, port clashes). ``lint`` is the full report: one row per
check and instance, including what only the machine can tell (a port held by another
process, a llama-server that is missing, a GPU device the binary cannot see, a log folder
that cannot be written).

With ``gateway=True`` both also check ``gateway.json`` when it exists; lint reports it as
the pseudo-instance ``(gateway)``, a label no instance name can take.

This module runs the checks and builds the report; each kind of check lives beside it:
:mod:`.targets` (reading the files), :mod:`.portcheck` (ports, also for ``create``),
:mod:`.filecheck` (model, binary and log files), :mod:`.argscheck` (``args`` and
secrets), :mod:`.gpucheck` (devices and their memory), :mod:`.gatewaycheck`
(``gateway.json``), :mod:`.homecheck` (the state folder), with :mod:`.verdict` the answer
they share.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from llama_orchestrator.config.gateway import GatewayConfig, gateway_file_given, load_gateway
from llama_orchestrator.config.loader import ConfigError, LoadedConfig, Problem
from llama_orchestrator.config.schema import RemoteConfig
from llama_orchestrator.doctor.aliascheck import alias_problems, alias_verdict
from llama_orchestrator.doctor.argscheck import args_verdict, secrets_verdict
from llama_orchestrator.doctor.filecheck import (
    binary_verdict,
    logs_verdict,
    model_verdict,
    server_log_paths,
)
from llama_orchestrator.doctor.gatewaycheck import gateway_checks
from llama_orchestrator.doctor.gpucheck import GpuChecks, Runner, run_tool, tool_devices
from llama_orchestrator.doctor.homecheck import HOME_LABEL, home_checks
from llama_orchestrator.doctor.kvcheck import kv_verdict
from llama_orchestrator.doctor.modelfile import model_file_problem
from llama_orchestrator.doctor.portcheck import (
    HolderFinder,
    PortProbe,
    clash_texts,
    effective_gateway,
    port_clashes,
    port_unique,
)
from llama_orchestrator.doctor.ports import port_holder
from llama_orchestrator.doctor.targets import Entry, Target, home_configs, load_entry
from llama_orchestrator.doctor.verdict import Level, Named, Verdict, json_row, syntax_verdicts
from llama_orchestrator.gpu.devices import Device
from llama_orchestrator.gpu.discovery import Detected, discover, no_device
from llama_orchestrator.home import Home

__all__ = [
    "GATEWAY_LABEL",
    "LintResult",
    "Linter",
    "Target",
    "gateway_problems",
    "lint",
    "validate",
]

GATEWAY_LABEL = "(gateway)"  # lint's row label for gateway.json; never an instance name


def _read(
    home: Home, targets: Sequence[Target]
) -> tuple[list[Entry], dict[Path, list[LoadedConfig]]]:
    """Each target read, and for each that loads, the other instances on its port."""
    entries = [load_entry(t) for t in targets]
    # A remote instance listens on no port here (issue 13): it claims none.
    loaded = [e.loaded for e in entries if e.loaded is not None and e.loaded.remote is None]
    local = [c for c in home_configs(home) if c.remote is None]
    clashes = port_clashes(loaded, local)
    for e in entries:
        if e.loaded is not None and e.loaded.remote is not None:
            clashes[e.loaded.path] = []
    return entries, clashes


# --- validate -----------------------------------------------------------------------------


def validate(
    home: Home,
    targets: Sequence[Target],
    *,
    gateway: bool = False,
    devices: Callable[[str], Detected] = discover,
) -> list[Problem]:
    """Every problem that would stop these configs from starting, in target order.

    With ``gateway``, the problems of ``gateway.json`` (when it exists) come last.
    ``devices``: a backend's devices now (``gpu.device_id: "auto"`` needs one).
    """
    entries, clashes = _read(home, targets)
    found: dict[str, Detected] = {}
    gw = effective_gateway(home)
    pools = home_configs(home)
    problems: list[Problem] = []
    for entry in entries:
        problems += entry.problems
        cfg = entry.loaded
        if cfg is None or cfg.remote is not None:  # a remote one has no file or port here
            continue
        problems += alias_problems(cfg, pools)
        file = str(cfg.path)
        reason = model_file_problem(cfg.model_path)
        if reason:
            model = str(cfg.model_path)
            problems.append(Problem(file, "model.path", f"model file {reason}", model))
        port = str(cfg.config.server.port)
        for text in clash_texts(cfg, clashes[cfg.path], gw, home):
            problems.append(Problem(file, "server.port", text, port))
        backend = cfg.config.gpu.backend
        if cfg.config.gpu.auto:  # issue 7: placed on one of the backend's devices
            seen = found[backend] = found.get(backend) or devices(backend)
            if not seen.free_mib:
                problems.append(Problem(file, "gpu.device_id", no_device(backend, seen.sources)))
    if gateway:
        problems += gateway_problems(home)
    return problems


def gateway_problems(home: Home) -> list[Problem]:
    """What is wrong with ``gateway.json`` (none when it does not exist)."""
    try:
        load_gateway(home)
    except ConfigError as e:
        return list(e.problems)
    return []


# --- lint ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LintResult:
    instance: str
    file: str
    check: str
    level: Level
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rows(label: str, file: Path, checks: Sequence[Named]) -> list[LintResult]:
    return [LintResult(label, str(file), check, level, msg) for check, (level, msg) in checks]


class Linter:
    """Runs every check; the device lister and port prober can be swapped for tests.

    ``own_pids`` are the recorded PIDs of this home's servers and ``daemon_pid`` its
    running daemon's: ports they hold are not foreign.
    """

    def __init__(
        self,
        home: Home,
        *,
        own_pids: Mapping[str, int] | None = None,
        daemon_pid: int | None = None,
        run: Runner = run_tool,
        holder: HolderFinder = port_holder,
        other_tools: Callable[[], list[Device]] = tool_devices,
    ) -> None:
        self.home = home
        self.own_pids = dict(own_pids or {})
        self.daemon_pid = daemon_pid
        self.ports = PortProbe(holder, self.own_pids, daemon_pid)
        self.gpu = GpuChecks(home, run, other_tools)

    def lint(
        self, targets: Sequence[Target], *, gateway: bool = False, state: bool = False
    ) -> list[LintResult]:
        """One row per check and target; with ``gateway``, then ``gateway.json``'s rows;
        with ``state``, then the home's own (``(home)``: the state folder's modes)."""
        entries, clashes = _read(self.home, targets)
        results: list[LintResult] = []
        for entry in entries:
            json_error = json_row(entry.json_problem) if entry.json_problem else None
            checks = syntax_verdicts(json_error, entry.schema_problems)
            if entry.loaded is not None:
                checks += self.instance_checks(entry.loaded, clashes[entry.loaded.path])
            results += _rows(entry.target.label, entry.target.path, checks)
        if gateway and gateway_file_given(self.home):
            results += self.gateway_rows()
        if state:
            results += _rows(HOME_LABEL, self.home.state_dir, home_checks(self.home))
        return results

    def instance_checks(self, cfg: LoadedConfig, clashes: Sequence[LoadedConfig]) -> list[Named]:
        """What the machine says about a config that loads, in report order."""
        if cfg.remote is not None:
            return remote_checks(cfg.remote)
        return [
            ("model", model_verdict(cfg)),
            ("binary", binary_verdict(cfg, self.home)),
            ("args", args_verdict(cfg)),
            ("secrets", secrets_verdict(cfg)),
            ("port-unique", port_unique(cfg, clashes, self.gateway, self.home)),
            ("aliases", alias_verdict(cfg, self.home_configs)),
            ("port-free", self.ports.instance_free(cfg)),
            ("gpu-device", self.gpu.device(cfg)),
            ("gpu-memory", self.gpu.memory(cfg)),
            ("logs-writable", self.check_logs(cfg)),
            ("kv-cache", kv_verdict(cfg, self.home)),
        ]

    def gateway_rows(self) -> list[LintResult]:
        """``gateway.json``: JSON, schema, keys, its port against instances, port free."""
        return _rows(GATEWAY_LABEL, self.home.gateway_path, gateway_checks(self.home, self.ports))

    @cached_property
    def home_configs(self) -> list[LoadedConfig]:
        """The home's instances that load, read once: the pools a config joins."""
        return home_configs(self.home)

    @cached_property
    def gateway(self) -> GatewayConfig | None:
        """The enabled gateway's settings (see :func:`.portcheck.effective_gateway`)."""
        return effective_gateway(self.home)

    def check_logs(self, cfg: LoadedConfig) -> Verdict:
        return logs_verdict(self.log_paths(cfg))

    def log_paths(self, cfg: LoadedConfig) -> list[Path]:
        """The files the server will write (the engine's answer), each once."""
        return server_log_paths(cfg, self.home)


def remote_checks(remote: RemoteConfig, env: Mapping[str, str] | None = None) -> list[Named]:
    """A remote instance's rows: its address, and whether its key's variable is set
    here (a warning only: the daemon's environment is what counts, and it may differ)."""
    env = os.environ if env is None else env
    rows: list[Named] = [("remote", ("ok", f"health-checked and routed to at {remote.url}"))]
    var = remote.api_key_env
    if var is None:
        rows.append(("api-key", ("ok", "no api_key_env: requests go without a key")))
    elif env.get(var):
        rows.append(("api-key", ("ok", f"{var} is set (its value is sent as the bearer key)")))
    else:
        rows.append(
            (
                "api-key",
                (
                    "warning",
                    f"{var} is not set in this environment; the daemon refuses to start "
                    f"the instance unless {var} is set where the daemon runs",
                ),
            )
        )
    return rows


def lint(
    home: Home,
    targets: Sequence[Target],
    *,
    own_pids: Mapping[str, int] | None = None,
    daemon_pid: int | None = None,
    gateway: bool = False,
    state: bool = False,
) -> list[LintResult]:
    linter = Linter(home, own_pids=own_pids, daemon_pid=daemon_pid)
    return linter.lint(targets, gateway=gateway, state=state)
