"""The ``(gateway)`` rows of ``config lint``: what is wrong with ``gateway.json``.

Its JSON and schema like an instance's, then its API keys, its port against the ports the
instances claim, and whether that port is free now.
"""

from __future__ import annotations

from llama_orchestrator.config.gateway import (
    GatewayConfig,
    exposure_problem,
    keys_file_path,
    parse_gateway,
    read_keys_file,
)
from llama_orchestrator.config.loader import ConfigError, parse_json, read_text
from llama_orchestrator.doctor.portcheck import PortProbe, gateway_port_unique
from llama_orchestrator.doctor.verdict import (
    Named,
    Verdict,
    json_row,
    problem_text,
    syntax_verdicts,
)
from llama_orchestrator.home import Home


def gateway_checks(home: Home, ports: PortProbe) -> list[Named]:
    """``gateway.json``: JSON, schema, keys, its port against instances, port free."""
    path = home.gateway_path
    try:
        text = read_text(path)
        parse_json(text, str(path))
    except ConfigError as e:  # unreadable, bad JSON, or past the loader's bounds
        return syntax_verdicts(json_row(e.problems[0]), ())
    try:
        config = parse_gateway(text, path)
    except ConfigError as e:
        return syntax_verdicts(None, e.problems)
    return [
        *syntax_verdicts(None, ()),
        ("api-keys", keys_verdict(config, home)),
        ("port-unique", gateway_port_unique(config, home)),
        ("port-free", ports.gateway_free(config)),
    ]


def keys_verdict(config: GatewayConfig, home: Home) -> Verdict:
    """The key file reads and holds good keys; no keys only on loopback."""
    keys_file = keys_file_path(config, home)
    try:
        file_keys = read_keys_file(keys_file, home.gateway_path) if keys_file else []
    except ConfigError as e:
        return "error", "; ".join(problem_text(p, with_file=True) for p in e.problems)
    keys = tuple(dict.fromkeys([*config.api_keys, *file_keys]))
    problem = exposure_problem(config, keys, str(home.gateway_path))
    if problem:
        return "error", problem_text(problem)
    if not keys:
        return "ok", f"no API keys: only this machine can reach {config.host}"
    source = f" ({len(file_keys)} from {keys_file})" if keys_file else ""
    return "ok", f"{len(keys)} API key(s){source}"
