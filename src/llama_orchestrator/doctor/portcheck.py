"""Ports: which host:port each config claims, where claims clash, who holds a port now.

Port clashes are looked for against every instance in the home, not only the ones being
checked: ``config lint gemma`` must say that ``phi`` already uses gemma's port. The
gateway's port counts too while the gateway is enabled (its defaults when
``gateway.json`` does not exist): an instance may not take it. ``create`` uses the same
claims to choose a port.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from llama_orchestrator.config.gateway import GatewayConfig, parse_gateway
from llama_orchestrator.config.loader import ConfigError, LoadedConfig, parse_json, read_text
from llama_orchestrator.doctor.ports import PortHolder, port_holder
from llama_orchestrator.doctor.verdict import Verdict
from llama_orchestrator.home import Home

HolderFinder = Callable[[str, int], "PortHolder | None"]
_WILDCARD_HOSTS = {"", "0.0.0.0", "::", "*"}
_DEFAULT_PORT = 8001  # ServerConfig's default, for raw configs that omit server.port
_GATEWAY_OFF: Verdict = ("ok", "the gateway is disabled (enabled: false)")


# --- claims ------------------------------------------------------------------------------


def _host_key(host: str) -> str:
    return "127.0.0.1" if host == "localhost" else host


def hosts_overlap(a: str, b: str) -> bool:
    """Would servers on ``a`` and ``b`` with one port collide? A wildcard collides with all."""
    a, b = _host_key(a), _host_key(b)
    return a == b or a in _WILDCARD_HOSTS or b in _WILDCARD_HOSTS


Endpoint = tuple[str, int]


def endpoint_taken(want: Endpoint | None, held: Mapping[str, Endpoint | None], me: str) -> str:
    """Why ``want`` (host, port) collides with an endpoint another instance holds ("" when
    free): the scheduler's port rule, between instances it admitted."""
    for name, endpoint in held.items():
        if name == me or want is None or endpoint is None:
            continue
        if endpoint[1] == want[1] and hosts_overlap(endpoint[0], want[0]):
            return (
                f"port {want[1]} is already in use by instance {name!r} "
                f"({endpoint[0]}:{endpoint[1]} is also used by instance {name!r})"
            )
    return ""


def _same_endpoint(a: LoadedConfig, b: LoadedConfig) -> bool:
    sa, sb = a.config.server, b.config.server
    return sa.port == sb.port and hosts_overlap(sa.host, sb.host)


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
        path = home.config_path(name)
        try:
            data = parse_json(read_text(path), str(path))
        except ConfigError:
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
            config = parse_gateway(read_text(path), path)
        except ConfigError:
            return None
    return config if config.enabled else None


def clash_texts(
    cfg: LoadedConfig, others: Sequence[LoadedConfig], gateway: GatewayConfig | None, home: Home
) -> list[str]:
    """Why ``cfg``'s port is taken: each other instance on it, then the gateway."""
    server = cfg.config.server
    texts = [
        f"{o.config.server.host}:{o.config.server.port} is also used by instance "
        f"{o.name!r} ({o.path})"
        for o in others
    ]
    if gateway is not None and gateway.port == server.port:
        where = "set in gateway.json" if home.gateway_path.exists() else "its default"
        texts.append(
            f"port {gateway.port} is the gateway's port ({where}): change server.port, "
            f"or set another port in {home.gateway_path}"
        )
    return texts


# --- the port-unique and port-free checks --------------------------------------------------


def port_unique(
    cfg: LoadedConfig, others: Sequence[LoadedConfig], gateway: GatewayConfig | None, home: Home
) -> Verdict:
    clashes = clash_texts(cfg, others, gateway, home)
    if clashes:
        return "error", "; ".join(clashes)
    server = cfg.config.server
    return "ok", f"no other instance uses {server.host}:{server.port}"


def gateway_port_unique(config: GatewayConfig, home: Home) -> Verdict:
    if not config.enabled:
        return _GATEWAY_OFF
    users = [
        f"instance {name!r} ({host}:{port})"
        for name, (host, port) in configured_endpoints(home).items()
        if port == config.port
    ]
    if users:
        return "error", f"port {config.port} is also used by " + ", ".join(users)
    return "ok", f"no instance uses port {config.port}"


@dataclass(frozen=True)
class PortProbe:
    """Who holds a port now. Ports held by this home's own processes are not foreign:
    ``own_pids`` are the recorded PIDs of its servers, ``daemon_pid`` its daemon's."""

    holder: HolderFinder = port_holder
    own_pids: Mapping[str, int] = field(default_factory=dict)
    daemon_pid: int | None = None

    def instance_free(self, cfg: LoadedConfig) -> Verdict:
        host, port = cfg.config.server.host, cfg.config.server.port
        own = self.own_pids.get(cfg.name)
        return self._free(host, port, own, "this instance's own server")

    def gateway_free(self, config: GatewayConfig) -> Verdict:
        if not config.enabled:
            return _GATEWAY_OFF
        return self._free(config.host, config.port, self.daemon_pid, "this home's daemon")

    def _free(self, host: str, port: int, own_pid: int | None, own: str) -> Verdict:
        try:
            holder = self.holder(host, port)
        except OSError as e:
            return "warning", f"cannot check {host}:{port}: {e.strerror or e}"
        if holder is None:
            return "ok", f"{host}:{port} is free"
        if holder.pid is not None and holder.pid == own_pid:
            return "ok", f"{host}:{port} is held by {own} (PID {holder.pid})"
        for other, pid in self.own_pids.items():
            if holder.pid == pid:
                return "warning", f"{host}:{port} is held by instance {other!r} (PID {pid})"
        return "warning", f"{host}:{port} is held by {holder}"
