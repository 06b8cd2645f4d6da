"""What a client's request asks for, read before anything is forwarded (issue 9).

The routes the gateway serves, the API key check, the model a routed request names (the
JSON body's ``model``, or ``?model=`` on a GET) and the instance an ``/upstream/`` request
names. Each of these answers a bad request with a ``GatewayError``; none of them writes
to the client.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import json
import os
from collections.abc import Callable, Iterable
from urllib.parse import parse_qs, unquote

from llama_orchestrator.gateway.errors import GatewayError, bad_request, foreign_host_refused
from llama_orchestrator.gateway.server import Request

ROUTED = frozenset(
    {
        b"/v1/chat/completions",
        b"/v1/completions",
        b"/v1/embeddings",
        b"/v1/responses",
        b"/v1/messages",
        b"/v1/messages/count_tokens",
        b"/v1/rerank",
    }
)
UPSTREAM_PREFIX = b"/upstream/"
# Host names besides loopback that a request served without a key may be addressed to:
# the control API's setting, and the same rule.
ALLOWED_HOSTS_ENV = "LLAMA_ORCH_ALLOWED_HOSTS"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_only(value: str) -> str:
    """``127.0.0.1:8080`` -> ``127.0.0.1``; ``[::1]:8080`` -> ``::1``."""
    value = value.strip()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


# The names nearly every request has, answered without parsing an address (per request).
_USUAL = frozenset({"127.0.0.1", "localhost", "::1"})


def allowed_hosts(environ: dict[str, str] | None = None) -> frozenset[str]:
    value = (os.environ if environ is None else environ).get(ALLOWED_HOSTS_ENV, "")
    return frozenset(_host_only(h).lower() for h in value.split(",") if h.strip())


def foreign_host(req: Request, allowed: frozenset[str]) -> GatewayError | None:
    """A request addressed to a name that is not this machine's (DNS rebinding: a page of
    evil.example whose name now resolves to 127.0.0.1 reads the answers of its GETs,
    which carry no ``Origin``). A request without ``Host`` (HTTP/1.0) is no browser's."""
    raw = req.header(b"host")
    if raw is None:
        return None
    host = raw.decode("latin-1")
    name = _host_only(host).lower().rstrip(".")
    if name in _USUAL or name in allowed or name.endswith(".localhost") or is_loopback(name):
        return None
    return foreign_host_refused(host, ALLOWED_HOSTS_ENV)


def refused_by_headers(
    req: Request, keys: tuple[bytes, ...], metrics_public: bool, hosts: frozenset[str]
) -> bool:
    """Will the gateway refuse this request whatever its body (no key, a foreign Host)?
    Asked at the end of the headers, so that such a body is never read. The dispatch
    decides the answer; this only has to agree with it. ``Host`` is checked without keys
    (the gateway is then on loopback); with keys, the key is the guard, and a gateway on
    the network is called by names of its own."""
    if req.path == b"/health" or req.path == b"/":
        return False
    if not keys:
        return foreign_host(req, hosts) is not None
    return not (metrics_public and req.path == b"/metrics") and not authorized(req, keys)


def foreign_page(req: Request) -> str | None:
    """Why a request may come from another site's page in a browser (its ``Origin`` is
    not this machine), or None. Browsers send ``Origin`` with every cross-origin request
    and every POST, DNS rebinding included. Without gateway keys, any page the user
    opens could otherwise use every model, and a remote instance's key (issue 13)."""
    for name, value in req.headers:
        if name.lower() == b"origin":
            origin = value.decode("latin-1").strip()
            netloc = origin.partition("://")[2]
            if not netloc or not is_loopback(_host_only(netloc)):
                return f"it comes from a page of {origin!r}"
    return None


def authorized(req: Request, keys: tuple[bytes, ...]) -> bool:
    """Does the request carry one of ``keys`` (Bearer, ``x-api-key`` or HTTP Basic)?
    Every offered key is compared with every gateway key, in constant time."""
    offered: list[bytes] = []
    for name, value in req.headers:
        lname = name.lower()
        if lname == b"authorization":
            scheme, _, cred = value.strip().partition(b" ")
            scheme = scheme.lower()
            if scheme == b"bearer":
                offered.append(cred.strip())
            elif scheme == b"basic":
                try:
                    user, _, password = base64.b64decode(cred.strip()).partition(b":")
                except (binascii.Error, ValueError):
                    continue
                offered += [user, password]
        elif lname == b"x-api-key":
            offered.append(value.strip())
    ok = False
    for candidate in offered:
        if candidate:
            for key in keys:
                ok |= hmac.compare_digest(candidate, key)
    return ok


def target_model(
    req: Request, names: Callable[[], Iterable[str]]
) -> tuple[str, bool, dict[str, object] | None]:
    """The model a routed request names, whether it asks for a stream, and its JSON body
    (None on GET); ``names`` lists the routable names for the error when there is none."""
    if req.method == b"GET":
        values = parse_qs(req.query.decode(errors="replace")) if req.query else {}
        model = values.get("model", [""])[0]
        if not model:
            raise bad_request("missing_model", "a GET on this route names its model as ?model=NAME")
        return model, False, None
    doc = parse_body(req.body)
    found = doc.get("model")
    if not isinstance(found, str) or not found:
        listed = ", ".join(names()) or "none"
        if "model" not in doc:
            problem = "the request body has no 'model'"
        elif isinstance(found, str):
            problem = "the request body's 'model' is an empty string"
        else:
            problem = f"the request body's 'model' is {_json_type(found)}, not a string"
        raise bad_request("missing_model", f"{problem}; available models: {listed}")
    return found, doc.get("stream") is True, doc


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({json.dumps(value)})"
    if isinstance(value, int | float):
        return f"a number ({json.dumps(value)[:40]})"
    return "an array" if isinstance(value, list) else "an object"


def parse_body(body: bytes) -> dict[str, object]:
    """The request body as a JSON object, or a 400 ``invalid_json`` in the API's words
    (never Python's: a nesting past the parser's recursion limit, a number too long to
    convert)."""
    try:
        doc = json.loads(body)
    except RecursionError:
        raise bad_request(
            "invalid_json", "the request body is nested too deeply (arrays or objects)"
        ) from None
    except (ValueError, UnicodeDecodeError) as e:
        why = str(e)
        if "integer string conversion" in why:
            why = "a number in it has more than 4300 digits"
        raise bad_request("invalid_json", f"the request body is not JSON: {why}") from None
    if not isinstance(doc, dict):
        raise bad_request("invalid_json", "the request body is not a JSON object")
    return doc


def upstream_target(req: Request) -> tuple[str, bytes]:
    """``/upstream/{instance}/{path}``: the instance's name and the URL to ask it for."""
    rest = req.path[len(UPSTREAM_PREFIX) :]
    raw_name, _, sub = rest.partition(b"/")
    name = unquote(raw_name.decode(errors="replace"))
    return name, b"/" + sub + (b"?" + req.query if req.query else b"")


def no_route(path: bytes) -> GatewayError:
    return GatewayError(
        404,
        "not_found",
        f"no route {path.decode(errors='replace')}; the gateway serves "
        + ", ".join(sorted(p.decode() for p in ROUTED))
        + ", /v1/models[/NAME], /models/load, /models/unload, the Ollama API (/api/chat, "
        "/api/generate, /api/embed, /api/tags, ...), /health and /upstream/INSTANCE/PATH",
    )
