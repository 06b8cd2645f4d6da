"""OpenAI-shaped error bodies: ``{"error": {"message", "type", "code"}}`` (issue 9, 8)."""

from __future__ import annotations

import json
from collections.abc import Iterable

from llama_orchestrator.errors import OrchestratorError

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"


def error_body(message: str, type_: str, code: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "code": code}}).encode()


class GatewayError(OrchestratorError):
    """A request the gateway answers itself, with an HTTP status and an OpenAI error."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        type_: str | None = None,
        retry_after: float | None = None,
        instance: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.type = type_ or (INVALID_REQUEST if status < 500 else SERVER_ERROR)
        self.retry_after = retry_after
        self.instance = instance

    def body(self) -> bytes:
        return error_body(self.message, self.type, self.code)


def error_headers(err: GatewayError) -> bytes:
    """The headers an error answer carries besides its body: when to retry, and which
    instance it concerns."""
    extra = b""
    if err.retry_after is not None:
        extra += b"Retry-After: %d\r\n" % max(1, round(err.retry_after))
    if err.instance:
        extra += b"X-Llama-Orch-Instance: %s\r\n" % err.instance.encode()
    return extra


def too_large(limit: int) -> bytes:
    mib = limit / (1024 * 1024)
    return error_body(
        f"request body is larger than the gateway's limit of {mib:g} MiB ({limit} bytes); "
        "raise gateway.json max_body_mb to accept it",
        INVALID_REQUEST,
        "request_too_large",
    )


def url_too_long(length: int, limit: int) -> bytes:
    return error_body(
        f"the request URL is longer than the gateway's limit of {limit // 1024} KiB "
        f"({length} bytes so far); send large parameters in a POST body instead",
        INVALID_REQUEST,
        "uri_too_long",
    )


def header_too_large(limit: int) -> bytes:
    return error_body(
        f"the request headers are larger than the gateway's limit of {limit // 1024} KiB "
        "(all header lines together); send large data in the body instead",
        INVALID_REQUEST,
        "request_header_fields_too_large",
    )


def receive_timed_out(seconds: float) -> bytes:
    return error_body(
        f"the request stopped arriving: no byte of it came for {seconds:g} s; send it "
        "again (a slow upload is never cut while its bytes keep coming)",
        INVALID_REQUEST,
        "request_timeout",
    )


def loop_detected() -> GatewayError:
    return GatewayError(
        508,
        "loop_detected",
        "this request came back to the gateway that sent it: a remote instance's "
        "remote.url points at this gateway (or at one that forwards back here); point it "
        "at the server itself",
    )


def foreign_page_refused(why: str) -> GatewayError:
    return GatewayError(
        403,
        "forbidden_origin",
        f"refused: {why}, and the gateway has no API keys, so any web page could use it; "
        "call it from this machine, or set gateway.json api_keys (pages given a key may "
        "then call it)",
    )


def foreign_host_refused(host: str, env: str) -> GatewayError:
    return GatewayError(
        421,
        "misdirected_request",
        f"Host {host!r} is not this machine's: without API keys the gateway answers only "
        f"requests addressed to 127.0.0.1 or localhost (a page that rebinds its own name "
        f"to this address cannot read it); add the name to {env} (comma-separated) in the "
        "daemon's environment, or set gateway.json api_keys",
    )


def invalid_api_key() -> GatewayError:
    return GatewayError(
        401,
        "invalid_api_key",
        "missing or invalid API key: send one of the gateway's keys as "
        "'Authorization: Bearer KEY', 'x-api-key: KEY' or HTTP Basic",
    )


def model_not_found(name: str, available: Iterable[str]) -> GatewayError:
    names = sorted(available)
    listed = ", ".join(names) if names else "none (no instance is configured)"
    return GatewayError(
        404, "model_not_found", f"model {name!r} not found; available models: {listed}"
    )


def invalid_config(name: str, problem: str) -> GatewayError:
    """An instance whose config was never valid: not routable, and not a missing model
    either (issue 19, item 9)."""
    return GatewayError(
        503,
        "invalid_config",
        f"instance {name!r} has an invalid config: {problem} "
        f"(`llama-orch config validate {name}` lists the problems)",
    )


def bad_request(code: str, message: str) -> GatewayError:
    return GatewayError(400, code, message)
