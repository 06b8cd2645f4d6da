"""The gateway's daemon-wide settings, ``<home>/gateway.json``: model and loader.

The file is optional; without it every field has its default. It enters through the same
door as instance configs: strict pydantic models (unknown keys are errors, nothing is
coerced), and every problem is a :class:`~llama_orchestrator.config.loader.Problem`
naming the file, the field and the value, raised together in one ``ConfigError``.

API keys come from ``api_keys`` and from ``api_keys_file`` (one key per line, ``#``
comments and blank lines ignored); :class:`LoadedGateway` holds the merged list. Keys are
never echoed in a problem: only their length is shown.

A gateway that listens beyond loopback without any key would serve every model to
anyone on the network, so that combination is refused.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
)

from llama_orchestrator.config.loader import (
    ConfigError,
    Problem,
    json_object,
    problems_from_validation,
    read_text,
    short_value,
)
from llama_orchestrator.home import Home

GATEWAY_SCHEMA_FILENAME = "llama-gateway-schema.json"
KEY_MIN_LENGTH = 8
DEVICE_BACKENDS = ("cuda", "vulkan", "metal")  # gpu.backend values that name a device
_MAX_DEVICE_ID = 63  # as gpu.device_id
_DEVICE_KEY = re.compile(r"^(?:cpu|(?:cuda|vulkan|metal):(?:[0-9]|[1-5][0-9]|6[0-3]))$")
_SECONDS_MAX = 31_536_000  # a year


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)


def key_problem(key: str) -> str | None:
    """Why ``key`` cannot be an API key, or None when it can."""
    if len(key) < KEY_MIN_LENGTH:
        return f"an API key must be at least {KEY_MIN_LENGTH} characters"
    if any(c.isspace() for c in key):
        return "an API key must not contain whitespace"
    return None


def _check_key(v: str) -> str:
    problem = key_problem(v)
    if problem:
        raise ValueError(problem)
    return v


ApiKey = Annotated[str, AfterValidator(_check_key)]


def device_key(backend: str, device_id: int | str) -> str:
    """The ``memory_budget_mb`` key of an instance's device: ``cpu`` or ``cuda:0``; an
    instance not placed yet (``device_id: "auto"``) asks for ``cuda:auto``, which the
    scheduler turns into one of the backend's devices (daemon/placement.py)."""
    return "cpu" if backend == "cpu" else f"{backend}:{device_id}"


def device_key_problem(key: str) -> str | None:
    """Why ``key`` is not a device key (with the spelling to use), or None when it is."""
    if _DEVICE_KEY.match(key):
        return None
    from llama_orchestrator.gpu.devices import parse_device_ref

    try:
        backend, index = parse_device_ref(key)
    except ValueError:
        backend, index = "", -1
    if backend in DEVICE_BACKENDS and 0 <= index <= _MAX_DEVICE_ID:
        return f"not a device key: write it as {device_key(backend, index)!r}"
    if key.strip().lower() == "cpu":
        return "not a device key: write it as 'cpu'"
    return (
        f"not a device key: use 'cpu' or BACKEND:INDEX with BACKEND one of "
        f"{', '.join(DEVICE_BACKENDS)} and INDEX 0-{_MAX_DEVICE_ID}, e.g. 'cuda:0'"
    )


def _check_device_key(v: str) -> str:
    problem = device_key_problem(v)
    if problem:
        raise ValueError(problem)
    return v


DeviceKey = Annotated[str, AfterValidator(_check_device_key)]
MiB = Annotated[int, Field(ge=1, le=1_073_741_824)]


def is_loopback(host: str) -> bool:
    """Is ``host`` reachable only from this machine (127.0.0.0/8, ::1, localhost)?"""
    h = host.strip().lower()
    if h == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(h)
    except ValueError:
        return False  # a host name (or a wildcard such as "") may reach the network
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


class QueueConfig(_Strict):
    max_per_model: int = Field(
        default=64,
        ge=0,
        le=1_000_000,
        description="requests that may wait for one model when its slots are busy (0: none)",
    )
    timeout: float = Field(
        default=300,
        gt=0,
        le=_SECONDS_MAX,
        description="seconds a queued request waits before it is answered with an error",
    )


class KvCacheConfig(_Strict):
    """The saved slots of every instance together (issue 21; daemon/kvcache.py)."""

    max_mb: int = Field(
        default=2048,
        ge=0,
        le=10_000_000,
        description="MiB the saved KV cache files may take together; the oldest go first "
        "(0: none are kept)",
    )
    ttl_s: float = Field(
        default=7 * 24 * 3600,
        ge=0,
        le=_SECONDS_MAX,
        description="seconds a saved KV cache file is kept after it was written",
    )
    min_tokens: int = Field(
        default=32,
        ge=0,
        le=10_000_000,
        description="a slot holding fewer tokens is not saved: re-reading so short a prompt "
        "costs less than saving and restoring it (0: every slot that holds tokens)",
    )


class GatewayConfig(_Strict):
    """``<home>/gateway.json``: one OpenAI-compatible endpoint in front of the instances."""

    schema_ref: str | None = Field(default=None, alias="$schema")
    host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="address the gateway listens on; beyond loopback it needs API keys",
    )
    port: int = Field(default=8080, ge=1, le=65535, description="port the gateway listens on")
    enabled: StrictBool = Field(default=True, description="run the gateway in the daemon")
    api_keys: list[ApiKey] = Field(
        default_factory=list,
        description=f"bearer keys clients must send (each at least {KEY_MIN_LENGTH} characters)",
    )
    api_keys_file: str | None = Field(
        default=None,
        min_length=1,
        description="file of more keys, one per line ('#' comments and blank lines ignored); "
        "relative to the home",
    )
    load_timeout: float = Field(
        default=120,
        ge=15,
        le=_SECONDS_MAX,
        description="seconds a request waits for its instance to become ready",
    )
    queue: QueueConfig = Field(default_factory=QueueConfig)
    max_body_mb: int = Field(
        default=32, ge=1, le=100_000, description="larger request bodies are refused with 413"
    )
    max_running: int | None = Field(
        default=None,
        ge=1,
        le=10_000,
        description="at most this many instances running at once (null: no limit)",
    )
    memory_budget_mb: dict[DeviceKey, MiB] = Field(
        default_factory=dict,
        description="MiB the instances on one device may use together, by device key "
        "('cpu', 'cuda:0', 'vulkan:1', 'metal:0')",
        json_schema_extra={"propertyNames": {"pattern": _DEVICE_KEY.pattern}},
    )
    default_ttl: int = Field(
        default=0,
        ge=0,
        le=_SECONDS_MAX,
        description="seconds idle before an instance started on demand is stopped "
        "(0: never), for instances whose gateway.ttl is null",
    )
    kv_cache: KvCacheConfig = Field(default_factory=KvCacheConfig)
    metrics_public: StrictBool = Field(
        default=False, description="serve /metrics without an API key"
    )
    affinity: StrictBool = Field(
        default=True,
        description="send a conversation's next turn to the replica of its pool that holds "
        "its prefix while that replica is ready and has a free slot (false: least busy only)",
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="origins of browser apps of other sites that may call the gateway "
        "without a key, e.g. 'https://chat.example.com' ('*': any site); pages on this "
        "machine always may, and with api_keys any origin that sends a key may",
    )

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        for origin in v:
            scheme, sep, host = origin.partition("://")
            if origin == "*":
                continue
            if scheme not in ("http", "https") or not sep or not host or "/" in host.rstrip("/"):
                raise ValueError(
                    f"{origin!r} is not an origin: write scheme://host[:port], "
                    "e.g. 'https://chat.example.com', with no path"
                )
        return v

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if v != v.strip() or any(c.isspace() for c in v):
            raise ValueError("must not contain whitespace")
        return v


@dataclass(frozen=True)
class LoadedGateway:
    """The gateway settings in effect: from ``gateway.json``, or every default without it."""

    config: GatewayConfig
    path: Path
    exists: bool  # False: the file is absent and these are the defaults
    api_keys: tuple[str, ...]  # api_keys, then the key file's, each once
    keys_file: Path | None = None  # api_keys_file resolved against the home
    raw_hash: str | None = None

    @property
    def requires_key(self) -> bool:
        return bool(self.api_keys)


def _hidden(value: Any) -> str:
    """A secret as a problem line may show it: its size, never its text."""
    if isinstance(value, str):
        return f"<hidden, {len(value)} characters>"
    if isinstance(value, list):
        return f"<hidden, a list of {len(value)}>"
    return short_value(value)


def parse_gateway(text: str, path: Path) -> GatewayConfig:
    """Validate ``gateway.json``'s text; ConfigError listing every problem.

    Checks the file alone; :func:`load_gateway` adds the key file and the refusal to
    listen beyond loopback without keys.
    """
    file = str(path)
    data = json_object(text, file)
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_redacted(problems_from_validation(file, e), e)) from None


def _redacted(problems: list[Problem], err: ValidationError) -> list[Problem]:
    """``problems`` with the values of ``api_keys`` entries hidden (one problem per error)."""
    out = []
    for p, e in zip(problems, err.errors(), strict=True):
        secret = p.field.startswith("api_keys") and not p.field.startswith("api_keys_file")
        if secret and p.value is not None:
            p = Problem(p.file, p.field, p.message, _hidden(e.get("input")))
        out.append(p)
    return out


def keys_file_path(config: GatewayConfig, home: Home) -> Path | None:
    if config.api_keys_file is None:
        return None
    p = Path(config.api_keys_file).expanduser()
    return p if p.is_absolute() else home.root / p


def read_keys_file(path: Path, gateway_file: Path) -> list[str]:
    """The keys in ``path``; ConfigError for a missing or unreadable file or a bad key."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        why = "the key file does not exist (create it, or fix the path; relative to the home)"
        raise ConfigError([Problem(str(gateway_file), "api_keys_file", why, str(path))]) from None
    except (OSError, UnicodeDecodeError) as e:
        why = f"cannot read the key file: {getattr(e, 'strerror', None) or e}"
        raise ConfigError([Problem(str(gateway_file), "api_keys_file", why, str(path))]) from None
    keys, problems = [], []
    for number, line in enumerate(text.splitlines(), 1):
        key = line.strip()
        if not key or key.startswith("#"):
            continue
        problem = key_problem(key)
        if problem:
            problems.append(Problem(str(path), f"line {number}", problem, _hidden(key)))
        else:
            keys.append(key)
    if problems:
        raise ConfigError(problems)
    return keys


def exposure_problem(config: GatewayConfig, keys: tuple[str, ...], file: str) -> Problem | None:
    """The refusal to serve beyond loopback without a key, or None."""
    if not config.enabled or keys or is_loopback(config.host):
        return None
    return Problem(
        file,
        "host",
        "a gateway listening beyond loopback without API keys lets anyone on the network "
        "use every model: add api_keys (or api_keys_file), or listen on 127.0.0.1",
        short_value(config.host),
    )


def gateway_file_given(home: Home) -> bool:
    """Is there a ``gateway.json`` to read? A dangling link is one (a broken one, which
    loading names), never taken for "no file: every default"."""
    path = home.gateway_path
    return path.exists() or path.is_symlink()


def load_gateway(home: Home) -> LoadedGateway:
    """The gateway settings of ``home``; the defaults when ``gateway.json`` does not exist.

    Raises ConfigError (every problem, each naming file, field and value) otherwise.
    """
    path = home.gateway_path
    if not gateway_file_given(home):
        return LoadedGateway(GatewayConfig(), path, False, ())
    text = read_text(path)
    config = parse_gateway(text, path)
    keys_file = keys_file_path(config, home)
    file_keys = read_keys_file(keys_file, path) if keys_file is not None else []
    keys = tuple(dict.fromkeys([*config.api_keys, *file_keys]))
    problem = exposure_problem(config, keys, str(path))
    if problem:
        raise ConfigError([problem])
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return LoadedGateway(config, path, True, keys, keys_file, digest)


def gateway_json_schema() -> dict[str, Any]:
    schema = GatewayConfig.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "llama-orchestrator gateway"
    return schema
