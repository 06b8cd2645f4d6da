"""``config validate`` and ``config lint``: what is wrong with a set of configs (issue 2, part 4).

``validate`` answers "can these configs be started?" with :class:`Problem` lines
(schema, folder name, model file, port clashes). ``lint`` is the full report: one row per
check and instance, including what only the machine can tell (a port held by another
process, a GPU device the binary cannot see, a log folder that cannot be written).

Port clashes are looked for against every instance in the home, not only the ones being
checked: ``config lint gemma`` must say that ``phi`` already uses gemma's port. The
gateway's port counts too while the gateway is enabled (its defaults when
``gateway.json`` does not exist): an instance may not take it.

With ``gateway=True`` both also check ``gateway.json`` when it exists; lint reports it as
the pseudo-instance ``(gateway)``, a label no instance name can take.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from llama_orchestrator.config.gateway import (
    GatewayConfig,
    exposure_problem,
    keys_file_path,
    load_gateway,
    parse_gateway,
    read_keys_file,
)
from llama_orchestrator.config.loader import (
    ConfigError,
    LoadedConfig,
    Problem,
    load_file,
    parse_config,
)
from llama_orchestrator.config.modelfile import model_file_problem
from llama_orchestrator.config.ports import PortHolder, port_holder
from llama_orchestrator.engine.command import log_paths
from llama_orchestrator.gpu.devices import Device, device_name, find_device
from llama_orchestrator.home import Home

Level = Literal["ok", "warning", "error"]
GATEWAY_LABEL = "(gateway)"  # lint's row label for gateway.json; never an instance name
_WILDCARD_HOSTS = {"", "0.0.0.0", "::", "*"}
_DEFAULT_PORT = 8001  # ServerConfig's default, for raw configs that omit server.port


# --- what to check -----------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One config file to check; ``label`` names it in reports."""

    label: str
    path: Path
    check_name: bool  # a ``config.json`` must be named like its folder

    @classmethod
    def of_instance(cls, home: Home, name: str) -> Target:
        return cls(name, home.config_path(name), True)

    @classmethod
    def of_file(cls, path: Path) -> Target:
        in_folder = path.name == "config.json"
        return cls(path.parent.name if in_folder else path.stem, path, in_folder)


@dataclass(frozen=True)
class Entry:
    """A target after reading: a JSON/file problem, schema problems, or a loaded config."""

    target: Target
    json_problem: Problem | None
    schema_problems: tuple[Problem, ...]
    loaded: LoadedConfig | None

    @property
    def problems(self) -> list[Problem]:
        first = [self.json_problem] if self.json_problem else []
        return first + list(self.schema_problems)


def load_entry(target: Target) -> Entry:
    file = str(target.path)
    try:
        text = target.path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Entry(target, Problem(file, "(file)", "no such file"), (), None)
    except (OSError, UnicodeDecodeError) as e:
        return Entry(target, Problem(file, "(file)", f"cannot read: {e}"), (), None)
    try:
        json.loads(text)
    except json.JSONDecodeError as e:
        where = f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}"
        return Entry(target, Problem(file, "(json)", where), (), None)
    try:
        loaded = parse_config(text, target.path, target.label if target.check_name else None)
    except ConfigError as e:
        return Entry(target, None, tuple(e.problems), None)
    return Entry(target, None, (), loaded)


# --- ports shared between configs ---------------------------------------------------------


def _host_key(host: str) -> str:
    return "127.0.0.1" if host == "localhost" else host


def hosts_overlap(a: str, b: str) -> bool:
    """Would servers on ``a`` and ``b`` with one port collide? A wildcard collides with all."""
    a, b = _host_key(a), _host_key(b)
    return a == b or a in _WILDCARD_HOSTS or b in _WILDCARD_HOSTS


def _same_endpoint(a: LoadedConfig, b: LoadedConfig) -> bool:
    sa, sb = a.config.server, b.config.server
    return sa.port == sb.port and hosts_overlap(sa.host, sb.host)


def home_configs(home: Home) -> list[LoadedConfig]:
    """Every instance of the home that loads; the broken ones are reported elsewhere."""
    out = []
    for name in home.instance_names():
        try:
            out.append(load_file(home.config_path(name)))
        except ConfigError:
            continue
    return out


def port_clashes(
    checked: Sequence[LoadedConfig], others: Iterable[LoadedConfig] = ()
) -> dict[Path, list[LoadedConfig]]:
    """For each checked config (by path), the other configs on the same host:port."""
    pool: dict[Path, LoadedConfig] = {}
    for cfg in [*checked, *others]:
        pool.setdefault(cfg.path.resolve(), cfg)
    return {
        cfg.path: [
            other
            for key, other in pool.items()
            if key != cfg.path.resolve() and _same_endpoint(cfg, other)
        ]
        for cfg in checked
    }


def configured_endpoints(home: Home, *, skip: str | None = None) -> dict[str, tuple[str, int]]:
    """``name -> (host, port)`` read leniently from every instance's raw JSON.

    Lenient on purpose: a config that is invalid today still claims its port for the day
    it is fixed, so ``create`` must not hand that port out.
    """
    found: dict[str, tuple[str, int]] = {}
    for name in home.instance_names():
        if name == skip:
            continue
        try:
            data = json.loads(home.config_path(name).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        server = data.get("server") if isinstance(data, dict) else None
        server = server if isinstance(server, dict) else {}
        port, host = server.get("port", _DEFAULT_PORT), server.get("host", "127.0.0.1")
        if isinstance(port, int) and isinstance(host, str):
            found[name] = (host, port)
    return found


def effective_gateway(home: Home) -> GatewayConfig | None:
    """The gateway settings whose port instances must leave alone; None when disabled.

    The defaults when ``gateway.json`` does not exist; None too when it cannot be read
    or is invalid (that is reported on its own, and guessing a port would mislead).
    """
    path = home.gateway_path
    if not path.exists():
        config = GatewayConfig()
    else:
        try:
            config = parse_gateway(path.read_text(encoding="utf-8"), path)
        except (OSError, UnicodeDecodeError, ConfigError):
            return None
    return config if config.enabled else None


def _gateway_clash_text(gateway: GatewayConfig, home: Home) -> str:
    where = "set in gateway.json" if home.gateway_path.exists() else "its default"
    return (
        f"port {gateway.port} is the gateway's port ({where}): change server.port, "
        f"or set another port in {home.gateway_path}"
    )


def gateway_problems(home: Home) -> list[Problem]:
    """What is wrong with ``gateway.json`` (none when it does not exist)."""
    try:
        load_gateway(home)
    except ConfigError as e:
        return list(e.problems)
    return []


def _endpoint(cfg: LoadedConfig) -> str:
    return f"{cfg.config.server.host}:{cfg.config.server.port}"


def _clash_text(other: LoadedConfig) -> str:
    return f"{_endpoint(other)} is also used by instance {other.name!r} ({other.path})"


# --- validate -----------------------------------------------------------------------------


def validate(home: Home, targets: Sequence[Target], *, gateway: bool = False) -> list[Problem]:
    """Every problem that would stop these configs from starting, in target order.

    With ``gateway``, the problems of ``gateway.json`` (when it exists) come last.
    """
    entries = [load_entry(t) for t in targets]
    loaded = [e.loaded for e in entries if e.loaded is not None]
    clashes = port_clashes(loaded, home_configs(home))
    gw = effective_gateway(home)
    problems: list[Problem] = []
    for entry in entries:
        problems += entry.problems
        cfg = entry.loaded
        if cfg is None:
            continue
        reason = model_file_problem(cfg.model_path)
        if reason:
            problems.append(
                Problem(str(cfg.path), "model.path", f"model file {reason}", str(cfg.model_path))
            )
        port = str(cfg.config.server.port)
        for other in clashes[cfg.path]:
            problems.append(Problem(str(cfg.path), "server.port", _clash_text(other), port))
        if gw is not None and gw.port == cfg.config.server.port:
            problems.append(
                Problem(str(cfg.path), "server.port", _gateway_clash_text(gw, home), port)
            )
    if gateway:
        problems += gateway_problems(home)
    return problems


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


Runner = Callable[[list[str]], str]
HolderFinder = Callable[[str, int], "PortHolder | None"]


def run_tool(argv: list[str]) -> str:
    """Run ``llama-server --list-devices``; its stdout then stderr, or raise when it fails."""
    from llama_orchestrator.gpu.run import ToolFailed, ToolMissing
    from llama_orchestrator.gpu.run import run_tool as run

    try:
        out = run(argv)
    except (ToolMissing, ToolFailed) as e:
        raise RuntimeError(str(e)) from None
    text = out.stdout + "\n" + out.stderr
    if out.returncode != 0 and "Available devices:" not in text:
        raise RuntimeError(out.reason())
    return text


def parse_devices(output: str) -> dict[str, str] | None:
    """``{"Vulkan0": "AMD Radeon ... (24560 MiB, 24000 MiB free)"}``; None without a list."""
    from llama_orchestrator.gpu import llama
    from llama_orchestrator.gpu.devices import ParseError

    try:
        return dict(llama.device_lines(output))
    except ParseError:
        return None


def _other_tools() -> list[Device]:
    """What nvidia-smi, vulkaninfo, rocm-smi and system_profiler see (for hints)."""
    from llama_orchestrator.gpu.detect import detect

    return detect(None).devices


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
        other_tools: Callable[[], list[Device]] = _other_tools,
    ) -> None:
        self.home = home
        self.own_pids = dict(own_pids or {})
        self.daemon_pid = daemon_pid
        self._run = run
        self._holder = holder
        self._other_tools = other_tools
        self._device_cache: dict[tuple[str, ...], list[Device] | str] = {}
        self._others: list[Device] | None = None
        self._overcommit: dict[str, str] | None = None
        self._gateway: GatewayConfig | None = None
        self._gateway_read = False

    def lint(self, targets: Sequence[Target], *, gateway: bool = False) -> list[LintResult]:
        """One row per check and target; with ``gateway``, then ``gateway.json``'s rows."""
        entries = [load_entry(t) for t in targets]
        loaded = [e.loaded for e in entries if e.loaded is not None]
        clashes = port_clashes(loaded, home_configs(self.home))
        results: list[LintResult] = []
        for entry in entries:
            results += self._syntax_rows(entry)
            cfg = entry.loaded
            if cfg is not None:
                results += self._machine_rows(entry.target, cfg, clashes[cfg.path])
        if gateway and self.home.gateway_path.exists():
            results += self.gateway_rows()
        return results

    @property
    def gateway(self) -> GatewayConfig | None:
        """The enabled gateway's settings (see :func:`effective_gateway`), read once."""
        if not self._gateway_read:
            self._gateway = effective_gateway(self.home)
            self._gateway_read = True
        return self._gateway

    # --- gateway.json ---------------------------------------------------------------------

    def gateway_rows(self) -> list[LintResult]:
        """``gateway.json``: JSON, schema, keys, its port against instances, port free."""
        path = self.home.gateway_path
        file = str(path)

        def rows(*checks: tuple[str, Level, str]) -> list[LintResult]:
            return [LintResult(GATEWAY_LABEL, file, c, level, m) for c, level, m in checks]

        try:
            text = path.read_text(encoding="utf-8")
            json.loads(text)
        except (OSError, UnicodeDecodeError) as e:
            return rows(("json", "error", f"cannot read: {e}"))
        except json.JSONDecodeError as e:
            where = f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}"
            return rows(("json", "error", where))
        out = rows(("json", "ok", "valid JSON"))
        try:
            config = parse_gateway(text, path)
        except ConfigError as e:
            return out + rows(*(("schema", "error", _problem_text(p)) for p in e.problems))
        out += rows(("schema", "ok", "matches the schema"))
        out += rows(("api-keys", *self.check_gateway_keys(config)))
        out += rows(("port-unique", *self.check_gateway_port_unique(config)))
        out += rows(("port-free", *self.check_gateway_port_free(config)))
        return out

    def check_gateway_keys(self, config: GatewayConfig) -> tuple[Level, str]:
        """The key file reads and holds good keys; no keys only on loopback."""
        keys_file = keys_file_path(config, self.home)
        try:
            file_keys = read_keys_file(keys_file, self.home.gateway_path) if keys_file else []
        except ConfigError as e:
            return "error", "; ".join(_problem_text(p, with_file=True) for p in e.problems)
        keys = tuple(dict.fromkeys([*config.api_keys, *file_keys]))
        problem = exposure_problem(config, keys, str(self.home.gateway_path))
        if problem:
            return "error", _problem_text(problem)
        if not keys:
            return "ok", f"no API keys: only this machine can reach {config.host}"
        source = f" ({len(file_keys)} from {keys_file})" if keys_file else ""
        return "ok", f"{len(keys)} API key(s){source}"

    def check_gateway_port_unique(self, config: GatewayConfig) -> tuple[Level, str]:
        if not config.enabled:
            return "ok", "the gateway is disabled (enabled: false)"
        users = [
            f"instance {name!r} ({host}:{port})"
            for name, (host, port) in configured_endpoints(self.home).items()
            if port == config.port
        ]
        if users:
            return "error", f"port {config.port} is also used by " + ", ".join(users)
        return "ok", f"no instance uses port {config.port}"

    def check_gateway_port_free(self, config: GatewayConfig) -> tuple[Level, str]:
        if not config.enabled:
            return "ok", "the gateway is disabled (enabled: false)"
        host, port = config.host, config.port
        try:
            holder = self._holder(host, port)
        except OSError as e:
            return "warning", f"cannot check {host}:{port}: {e.strerror or e}"
        if holder is None:
            return "ok", f"{host}:{port} is free"
        if holder.pid is not None and holder.pid == self.daemon_pid:
            return "ok", f"{host}:{port} is held by this home's daemon (PID {holder.pid})"
        for other, pid in self.own_pids.items():
            if holder.pid == pid:
                return "warning", f"{host}:{port} is held by instance {other!r} (PID {pid})"
        return "warning", f"{host}:{port} is held by {holder}"

    def _machine_rows(
        self, target: Target, cfg: LoadedConfig, clashes: Sequence[LoadedConfig]
    ) -> list[LintResult]:
        checks: list[tuple[str, tuple[Level, str]]] = [
            ("model", self.check_model(cfg)),
            ("port-unique", self.check_port_unique(cfg, clashes)),
            ("port-free", self.check_port_free(cfg)),
            ("gpu-device", self.check_gpu_device(cfg)),
            ("gpu-memory", self.check_gpu_memory(cfg)),
            ("logs-writable", self.check_logs(cfg)),
        ]
        label, file = target.label, str(target.path)
        return [LintResult(label, file, check, level, msg) for check, (level, msg) in checks]

    @staticmethod
    def _syntax_rows(entry: Entry) -> list[LintResult]:
        label, file = entry.target.label, str(entry.target.path)
        if entry.json_problem is not None:
            return [LintResult(label, file, "json", "error", entry.json_problem.message)]
        rows = [LintResult(label, file, "json", "ok", "valid JSON")]
        for p in entry.schema_problems:
            tail = f" ({p.value})" if p.value is not None else ""
            rows.append(LintResult(label, file, "schema", "error", f"{p.field}: {p.message}{tail}"))
        if not entry.schema_problems:
            rows.append(LintResult(label, file, "schema", "ok", "matches the schema"))
        return rows

    def check_model(self, cfg: LoadedConfig) -> tuple[Level, str]:
        path = cfg.model_path
        reason = model_file_problem(path)
        if reason:
            return "error", f"model file {path} {reason}"
        return "ok", f"GGUF model {path} ({path.stat().st_size / 2**20:.1f} MiB)"

    def check_port_unique(
        self, cfg: LoadedConfig, others: Sequence[LoadedConfig]
    ) -> tuple[Level, str]:
        clashes = [_clash_text(o) for o in others]
        gateway = self.gateway
        if gateway is not None and gateway.port == cfg.config.server.port:
            clashes.append(_gateway_clash_text(gateway, self.home))
        if clashes:
            return "error", "; ".join(clashes)
        return "ok", f"no other instance uses {_endpoint(cfg)}"

    def check_port_free(self, cfg: LoadedConfig) -> tuple[Level, str]:
        host, port = cfg.config.server.host, cfg.config.server.port
        try:
            holder = self._holder(host, port)
        except OSError as e:
            return "warning", f"cannot check {host}:{port}: {e.strerror or e}"
        if holder is None:
            return "ok", f"{host}:{port} is free"
        if holder.pid is not None and holder.pid == self.own_pids.get(cfg.name):
            return "ok", f"{host}:{port} is held by this instance's own server (PID {holder.pid})"
        for other, pid in self.own_pids.items():
            if holder.pid == pid:
                return "warning", f"{host}:{port} is held by instance {other!r} (PID {pid})"
        return "warning", f"{host}:{port} is held by {holder}"

    def check_gpu_device(self, cfg: LoadedConfig) -> tuple[Level, str]:
        backend, device_id = cfg.config.gpu.backend, cfg.config.gpu.device_id
        if backend == "cpu":
            return "ok", "cpu backend: no GPU device needed"
        binary, devices = self._binary_devices(cfg)
        if isinstance(devices, str):
            return "warning", f"cannot detect devices: {devices}"
        wanted = device_name(backend, device_id)
        found = find_device(devices, backend, device_id)
        if found is not None:
            return "ok", f"{found.label}: {found.summary()}"
        listed = ", ".join(f"{d.label} ({d.summary()})" for d in devices) or "none"
        message = f"device {wanted} not found by {binary}; devices found: {listed}"
        return "error", message + self._hint(devices, backend, device_id, binary)

    def check_gpu_memory(self, cfg: LoadedConfig) -> tuple[Level, str]:
        """Warn when the instances assigned to one device clearly exceed its memory."""
        if cfg.config.gpu.backend == "cpu" or cfg.config.gpu.layers == 0:
            return "ok", "no layers offloaded to a GPU"
        _binary, devices = self._binary_devices(cfg)
        if isinstance(devices, str):
            return "ok", f"device memory unknown: {devices}"
        if self._overcommit is None:
            from llama_orchestrator.models.fit import device_overcommit

            self._overcommit = device_overcommit(home_configs(self.home), devices)
        message = self._overcommit.get(cfg.name)
        if message:
            return "warning", message
        return "ok", "the instances on its device fit in its memory (estimate)"

    def _binary_devices(self, cfg: LoadedConfig) -> tuple[str, list[Device] | str]:
        """The binary that would run ``cfg`` and its device list (or why there is none)."""
        from llama_orchestrator.engine.binary import BinaryError, resolve_binary

        try:
            binary = resolve_binary(cfg.config.binary, self.home, config_dir=cfg.path.parent)
        except BinaryError as e:
            return "?", str(e)
        return binary.display, self._devices([*binary.argv_prefix, "--list-devices"])

    def _hint(self, devices: list[Device], backend: str, device_id: int, binary: str) -> str:
        """Why the device may be missing: the binary's build, or what other tools see."""
        hint = ""
        if not any(d.backend == backend for d in devices):
            hint = f"; {binary} lists no {backend} devices: is it built with {backend} support?"
        if self._others is None:
            self._others = self._other_tools()
        seen = find_device(self._others, backend, device_id)
        if seen is not None:
            hint += f"; {', '.join(seen.sources)} sees {seen.label} ({seen.summary()})"
        return hint

    def _devices(self, argv: list[str]) -> list[Device] | str:
        """The parsed device list, or why there is none; one run per binary per lint."""
        from llama_orchestrator.gpu import llama
        from llama_orchestrator.gpu.devices import ParseError

        key = tuple(argv)
        if key not in self._device_cache:
            try:
                self._device_cache[key] = llama.parse(self._run(argv))
            except ParseError:
                self._device_cache[key] = f"{argv[0]} printed no device list"
            except (OSError, RuntimeError) as e:
                self._device_cache[key] = str(e)
        return self._device_cache[key]

    def check_logs(self, cfg: LoadedConfig) -> tuple[Level, str]:
        results = [log_path_problem(p) for p in self.log_paths(cfg)]
        errors = [msg for level, msg in results if level == "error"]
        if errors:
            return "error", "; ".join(errors)
        return "ok", "; ".join(dict.fromkeys(msg for _, msg in results))

    def log_paths(self, cfg: LoadedConfig) -> list[Path]:
        """The files the server will write (the engine's answer), each once."""
        return list(dict.fromkeys(log_paths(cfg, self.home.root)))


def _problem_text(p: Problem, *, with_file: bool = False) -> str:
    """A problem as a lint message: ``field: message (value)``, its file when it differs."""
    tail = f" ({p.value})" if p.value is not None else ""
    head = f"{p.file}: " if with_file else ""
    return f"{head}{p.field}: {p.message}{tail}"


def _folder_problem(path: Path) -> str | None:
    if not path.is_dir():
        return f"{path} is not a folder"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"{path} is not writable"
    return None


def log_path_problem(log_file: Path) -> tuple[Level, str]:
    """Can ``log_file`` be appended to (creating its folders if needed)?"""
    if log_file.is_dir():
        return "error", f"{log_file} is a folder, not a log file"
    if log_file.exists() and not os.access(log_file, os.W_OK):
        return "error", f"{log_file} is not writable"
    folder = log_file.parent
    if folder.exists():
        problem = _folder_problem(folder)
        if problem:
            return "error", f"log folder {problem}"
        return "ok", f"log folder {folder} is writable"
    parent = folder.parent
    while not parent.exists() and parent.parent != parent:
        parent = parent.parent
    problem = _folder_problem(parent)
    if problem:
        return "error", f"log folder {folder} cannot be created: {problem}"
    return "ok", f"log folder {folder} will be created (in {parent})"


def lint(
    home: Home,
    targets: Sequence[Target],
    *,
    own_pids: Mapping[str, int] | None = None,
    daemon_pid: int | None = None,
    gateway: bool = False,
) -> list[LintResult]:
    return Linter(home, own_pids=own_pids, daemon_pid=daemon_pid).lint(targets, gateway=gateway)
