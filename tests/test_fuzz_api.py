"""Fuzzing the control API and the gateway against their OpenAPI (issue 12).

schemathesis generates requests from each operation's schema (valid ones, and ones that
break it), sends them to a real daemon with a real instance, and checks the answers:
never a 5xx, and a body that matches the schema wherever the schema declares one. The
daemon serves its own document (``/openapi.json``, from FastAPI); the gateway is a
hand-written HTTP server without one, so :data:`GATEWAY_OPENAPI` below describes its
public routes as clients see them (OpenAI-shaped bodies and errors).

The number of cases is bounded (``EXAMPLES`` per operation and mode), so the file runs
in well under a minute; every failure is collected and reported together.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli, free_port, write_config

from llama_orchestrator.home import Home

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import checks  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402

KEY = "sk-fuzz-test"
EXAMPLES = 15  # cases per operation and generation mode
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)


def fuzz(
    schema: Any,
    base_url: str,
    headers: dict[str, str],
    check_list: list[Any],
    *,
    examples: int = EXAMPLES,
    modes: Iterable[GenerationMode] = MODES,
    path_parameters: dict[str, Any] | None = None,
) -> tuple[list[str], Counter[int]]:
    """Run every operation of ``schema``; returns (failures in words, the status codes
    of the answers)."""
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    for result in schema.get_all_operations():
        op = result.ok()
        for mode in modes:
            kw = {"path_parameters": path_parameters} if path_parameters else {}
            strategy = op.as_strategy(generation_mode=mode, **kw)

            @settings(
                max_examples=examples,
                deadline=None,
                database=None,
                derandomize=True,  # the same cases every run: a failure reproduces
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
                report_multiple_bugs=False,
            )
            @given(case=strategy)
            def run(case: Any) -> None:
                response = case.call_and_validate(
                    base_url=base_url, headers=headers, checks=check_list, timeout=60
                )
                statuses[response.status_code] += 1

            try:
                run()
            except Unsatisfiable:
                pass  # nothing to break: no parameters, or any value of them is valid
            except Exception as e:  # the failure, with the case that caused it
                failures.append(f"{op.label} [{mode.value}]: {e}"[:3000])
    return failures, statuses


def start(cli: Cli, home: Home, tiny_model: Path) -> tuple[str, str, str]:
    """A daemon with its gateway (keys on) and one running instance, ``alpha``."""
    gateway_port = free_port()
    home.root.mkdir(parents=True, exist_ok=True)
    (home.root / "gateway.json").write_text(
        json.dumps({"port": gateway_port, "api_keys": [KEY], "load_timeout": 20})
    )
    write_config(home, "alpha", tiny_model, free_port())
    assert cli("up", "alpha").returncode == 0
    endpoint = json.loads(home.daemon_endpoint_path.read_text())
    return endpoint["url"], home.token_path.read_text().strip(), f"http://127.0.0.1:{gateway_port}"


# The control API: what is not fuzzed, and why.
DAEMON_SKIPPED = {
    ("GET", "/v1/events"): "an endless stream (tests/test_events_stream.py)",
    ("POST", "/v1/daemon/shutdown"): "would stop the daemon under test",
}


def test_fuzz_the_control_api(cli: Cli, home: Home, tiny_model: Path) -> None:
    url, token, _gateway = start(cli, home, tiny_model)
    auth = {"Authorization": f"Bearer {token}"}
    schema = schemathesis.openapi.from_url(url + "/openapi.json", headers=auth, timeout=30)
    for method, path in DAEMON_SKIPPED:
        schema = schema.exclude(method=method, path=path)
    check_list = [checks.not_a_server_error, checks.response_schema_conformance]
    failures, statuses = fuzz(schema, url, auth, check_list)
    # and the instance that exists, through the operations that only read
    readers = schema.include(method="GET", path_regex=r"\{name\}")
    more, more_statuses = fuzz(
        readers,
        url,
        auth,
        check_list,
        modes=[GenerationMode.POSITIVE],
        path_parameters={"name": "alpha"},
    )
    assert not failures + more, "\n\n".join(failures + more)
    statuses += more_statuses
    print(f"control API: {statuses.total()} cases, status codes {dict(sorted(statuses.items()))}")
    # answered, not refused wholesale: real reads, and the validation of bad input
    assert statuses[200] >= 15 and sum(v for k, v in statuses.items() if 400 <= k < 500) >= 30
    # the daemon is still there and still serves alpha
    assert cli("ps", "--json").returncode == 0


# --- the gateway ---------------------------------------------------------------------

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                # the gateway's codes are words; llama-server's own errors give a number
                "code": {"type": ["string", "integer", "null"]},
            },
        }
    },
}
_ERRORS = {
    str(code): {"description": why, "content": {"application/json": {"schema": _ERROR}}}
    for code, why in (
        (400, "a body that is not JSON, or names no model"),
        (401, "no key, or a wrong one"),
        (404, "no such model, instance or route"),
        (413, "a body over max_body_mb"),
        (429, "the model's queue is full"),
    )
}
_MODEL = {"type": "string", "enum": ["alpha", "no-such-model"]}
_MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"type": "string", "enum": ["system", "user", "assistant"]},
        "content": {"type": "string", "maxLength": 40},
    },
}
_SAMPLING = {
    "max_tokens": {"type": "integer", "minimum": 1, "maximum": 4},
    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
    "stream": {"type": "boolean"},
}
_CHOICES = {"type": "array", "minItems": 1, "items": {"type": "object"}}
_EVENT = {"type": "object", "required": ["data"], "properties": {"data": {"type": "string"}}}


def _completion_route(request: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    return {
        "post": {
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": request}},
            },
            "responses": {
                "200": {
                    "description": "the instance's answer, or its stream",
                    "content": {
                        "application/json": {"schema": answer},
                        # each event: schemathesis parses the stream into its events
                        "text/event-stream": {"schema": _EVENT},
                    },
                },
                **_ERRORS,
            },
        }
    }


GATEWAY_OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "llama-orchestrator gateway (public routes)", "version": "1"},
    "components": {
        "securitySchemes": {"key": {"type": "http", "scheme": "bearer"}},
    },
    "security": [{"key": []}],
    "paths": {
        "/health": {
            "get": {
                "security": [],
                "responses": {
                    "200": {
                        "description": "the gateway answers",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["status"],
                                    "properties": {"status": {"enum": ["ok"]}},
                                }
                            }
                        },
                    }
                },
            }
        },
        "/v1/models": {
            "get": {
                "responses": {
                    "200": {
                        "description": "every routable name",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["object", "data"],
                                    "properties": {
                                        "object": {"enum": ["list"]},
                                        "data": {
                                            "type": "array",
                                            "items": {
                                                "type": "object",
                                                "required": ["id", "object", "state"],
                                                "properties": {
                                                    "id": {"type": "string"},
                                                    "object": {"enum": ["model"]},
                                                    "state": {"type": "string"},
                                                    "instances": {
                                                        "type": "array",
                                                        "items": {"type": "string"},
                                                    },
                                                },
                                            },
                                        },
                                    },
                                }
                            }
                        },
                    },
                    **_ERRORS,
                }
            }
        },
        "/metrics": {
            "get": {
                "responses": {
                    "200": {
                        "description": "the Prometheus exposition",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_ERRORS,
                }
            }
        },
        "/v1/chat/completions": _completion_route(
            {
                "type": "object",
                "required": ["model", "messages"],
                "properties": {
                    "model": _MODEL,
                    "messages": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": 3,
                        "items": _MESSAGE,
                    },
                    **_SAMPLING,
                },
            },
            {
                "type": "object",
                "required": ["choices", "object"],
                "properties": {"object": {"enum": ["chat.completion"]}, "choices": _CHOICES},
            },
        ),
        "/v1/completions": _completion_route(
            {
                "type": "object",
                "required": ["model", "prompt"],
                "properties": {
                    "model": _MODEL,
                    "prompt": {"type": "string", "maxLength": 40},
                    **_SAMPLING,
                },
            },
            {
                "type": "object",
                "required": ["choices"],
                "properties": {"choices": _CHOICES},
            },
        ),
        "/upstream/{instance}/health": {
            "get": {
                "parameters": [
                    {
                        "name": "instance",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 20},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "the instance's own /health",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    **_ERRORS,
                },
            }
        },
    },
}


RELAYED_5XX: list[str] = []


def not_a_gateway_server_error(ctx: Any, response: Any, case: Any) -> bool | None:
    """No 5xx of the gateway's own. llama-server answers some malformed requests with a
    500 of its own (a message without ``role``: "Failed to parse messages"): the gateway
    relays an instance's answer untouched, so such a 500 is the instance's, known by the
    ``X-Llama-Orch-Instance`` header of a relayed answer and llama-server's numeric error
    code (the gateway's own codes are words). Those are kept in ``RELAYED_5XX``."""
    if response.status_code < 500:
        return None
    try:
        code = json.loads(response.text)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        code = None
    if response.headers.get("x-llama-orch-instance") and isinstance(code, int):
        RELAYED_5XX.append(f"{response.status_code} {response.text[:200]}")
        return None
    raise AssertionError(f"the gateway answered {response.status_code}: {response.text[:500]}")


def test_fuzz_the_gateway(cli: Cli, home: Home, tiny_model: Path) -> None:
    _url, _token, gateway = start(cli, home, tiny_model)
    schema = schemathesis.openapi.from_dict(GATEWAY_OPENAPI)
    check_list = [not_a_gateway_server_error, checks.response_schema_conformance]
    key = {"Authorization": f"Bearer {KEY}"}
    failures, statuses = fuzz(schema, gateway, key, check_list, examples=30)
    # without a key, or a wrong one: refused in the same shape
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        more, refused = fuzz(schema, gateway, headers, check_list, examples=3)
        failures += more
        assert set(refused) <= {200, 401}, refused  # /health needs no key
    assert not failures, "\n\n".join(failures)
    print(f"gateway: {statuses.total()} cases, status codes {dict(sorted(statuses.items()))}")
    print(f"llama-server's own 5xx, relayed: {len(RELAYED_5XX)}", *RELAYED_5XX[:3], sep="\n  ")
    assert statuses[200] >= 20 and statuses[404] >= 5 and statuses[400] >= 5, statuses
