"""The instance configuration model: the only door through which config reaches the engine.

Field for field the schema of the project plan, with its bounds. Unknown keys are errors
(``extra="forbid"``) so a typo is never silently ignored, and nothing is coerced from a
string that merely looks like a number (``strict`` scalars).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StrictBool,
    field_validator,
    model_serializer,
    model_validator,
)

from llama_orchestrator.home import NAME_MAX, NAME_PATTERN

Backend = Literal["cpu", "vulkan", "cuda", "metal"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)


class ModelConfig(_Strict):
    path: Path = Field(
        description="GGUF model file; relative paths resolve against the config file's folder."
    )
    context_size: int = Field(
        default=4096, ge=16, le=1_048_576, description="-c, tokens of context"
    )
    batch_size: int = Field(default=512, ge=1, le=65_536, description="-b, logical batch size")
    threads: int = Field(default=8, ge=1, le=128, description="-t, CPU threads")

    @field_validator("path", mode="before")
    @classmethod
    def _path_from_str(cls, v: Any) -> Any:
        # strict mode refuses str -> Path; JSON has no path type, so accept a non-empty string.
        if isinstance(v, str):
            if not v.strip():
                raise ValueError("must not be empty")
            return Path(v)
        return v


class ServerConfig(_Strict):
    host: str = Field(default="127.0.0.1", min_length=1, description="--host")
    port: int = Field(default=8001, ge=1024, le=65535, description="--port")
    timeout: int = Field(default=600, ge=1, le=86_400, description="-to, read/write timeout (s)")
    parallel: int = Field(default=1, ge=1, le=16, description="-np, parallel slots")
    stop_timeout: float = Field(
        default=10, ge=0, le=3600, description="seconds between SIGTERM and SIGKILL on stop"
    )


AUTO_DEVICE = "auto"  # gpu.device_id: the daemon places the instance at each start
DEVICE_ID_MAX = 63
DeviceId = Annotated[int, Field(ge=0, le=DEVICE_ID_MAX)] | Literal["auto"]


class GpuConfig(_Strict):
    backend: Backend = "cpu"
    device_id: DeviceId = Field(
        default=0,
        description="the backend's device number (as `llama-orch devices` lists it), or "
        "'auto': at each start, the device of this backend with the most free budget "
        "that fits the instance",
    )
    layers: int = Field(default=0, ge=0, le=10_000, description="-ngl, layers offloaded to the GPU")

    @field_validator("device_id", mode="before")
    @classmethod
    def _device_id(cls, v: Any) -> Any:
        # one sentence instead of the union's two (an int error and a literal error)
        if v == AUTO_DEVICE and isinstance(v, str):
            return v
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"must be a device number (0-{DEVICE_ID_MAX}) or 'auto'")
        if not 0 <= v <= DEVICE_ID_MAX:
            raise ValueError(f"must be from 0 to {DEVICE_ID_MAX}, or 'auto' (got {v})")
        return v

    @model_validator(mode="after")
    def _auto_needs_a_gpu(self) -> GpuConfig:
        if self.auto and self.backend == "cpu":
            raise ValueError(
                "device_id 'auto' chooses a GPU, and backend 'cpu' has none: remove "
                "device_id, or set backend to cuda, vulkan or metal"
            )
        return self

    @property
    def auto(self) -> bool:
        """Is the device chosen at each start (``device_id: "auto"``)?"""
        return self.device_id == AUTO_DEVICE

    def placed(self, device_id: int) -> GpuConfig:
        """This config on device ``device_id`` (an ``auto`` one, once placed)."""
        return self.model_copy(update={"device_id": device_id})


class HealthcheckConfig(_Strict):
    path: str = Field(default="/health", pattern=r"^/")
    interval: float = Field(default=10, gt=0, le=3600)
    timeout: float = Field(default=5, gt=0, le=600)
    retries: int = Field(default=3, ge=1, le=100)
    start_period: float = Field(
        default=60, ge=0, le=86_400, description="seconds allowed for loading"
    )
    probe: Literal["health", "completion"] = Field(
        default="health",
        description="'completion' also proves liveness with a one-token completion "
        "every probe_every checks (a server can answer /health yet fail inference)",
    )
    probe_every: int = Field(default=3, ge=1, le=1000)


class RestartPolicy(_Strict):
    enabled: StrictBool = True
    max_retries: int = Field(default=5, ge=0, le=1000)
    backoff_multiplier: float = Field(default=2.0, ge=1.0, le=10.0)
    backoff_base: float = Field(default=1.0, ge=0.0, le=3600, description="first delay (s)")
    backoff_max: float = Field(default=60.0, ge=0.0, le=86_400, description="delay cap (s)")
    stable_after: float = Field(
        default=10.0, ge=0.0, le=86_400, description="a healthy run this long resets the count"
    )


class LogsConfig(_Strict):
    stdout: str = Field(default="logs/{name}/stdout.log", description="relative to the home")
    stderr: str = Field(default="logs/{name}/stderr.log", description="relative to the home")
    max_size_mb: int = Field(default=100, ge=1, le=100_000)
    rotation: int = Field(default=5, ge=0, le=100)


ALIAS_MAX = 128
TTL_MAX = 31_536_000  # a year, in seconds


def _check_alias(v: str) -> str:
    if not v:
        raise ValueError("an alias must not be empty")
    if len(v) > ALIAS_MAX:
        raise ValueError(f"an alias is at most {ALIAS_MAX} characters, this one has {len(v)}")
    if any(c.isspace() for c in v):
        raise ValueError("an alias must not contain whitespace")
    if v.startswith("/"):
        raise ValueError("an alias must not start with '/' (it would look like a path)")
    return v


Alias = Annotated[str, AfterValidator(_check_alias)]


class InstanceGateway(_Strict):
    """How the gateway routes to and schedules this instance."""

    aliases: list[Alias] = Field(
        default_factory=list,
        description="extra names clients may send as 'model' for this instance "
        "(each 1-128 characters, no whitespace, not starting with '/')",
    )
    on_demand: StrictBool = Field(
        default=True, description="a request for this instance starts it when it is stopped"
    )
    ttl: int | None = Field(
        default=None,
        ge=0,
        le=TTL_MAX,
        description="seconds idle before it is stopped; null: gateway.json's default_ttl "
        "for instances started on demand; 0: never stopped for being idle",
    )
    pinned: StrictBool = Field(default=False, description="never evicted to make room")
    priority: int = Field(
        default=0, ge=-100, le=100, description="eviction order: lower is evicted first"
    )
    kv_cache: StrictBool | None = Field(
        default=None,
        description="save its slots' KV cache before a stop (eviction, idle, down) and "
        "restore it when it starts again; null: on for a local server with slots; "
        "false: a swap loses its conversations",
    )

    @field_validator("aliases")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        seen: set[str] = set()
        for alias in v:
            if alias in seen:
                raise ValueError(f"alias {alias!r} is listed twice (list each name once)")
            seen.add(alias)
        return v


ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"


class RemoteConfig(_Strict):
    """A server this machine does not run (issue 13): only health-checked and routed to."""

    url: str = Field(
        description="the server's root, http(s)://host[:port] (another machine's "
        "llama-server or daemon instance, a Kubernetes Service)"
    )
    api_key_env: str | None = Field(
        default=None,
        json_schema_extra={"pattern": ENV_NAME_PATTERN},
        description="name of the daemon's environment variable holding the server's API "
        "key, sent upstream as 'Authorization: Bearer <key>' (never the key itself here)",
    )
    parallel: int = Field(
        default=1,
        ge=1,
        le=1024,
        description="requests the gateway sends it at once (its slots); more wait in the "
        "gateway's queue",
    )

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(ENV_NAME_PATTERN, v):
            raise ValueError(
                "must be the name of an environment variable (letters, digits and _, "
                "not starting with a digit), e.g. FAR_KEY; the key itself goes in that "
                "variable, never in the config"
            )
        return v

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        parts = urlsplit(v.strip())
        if parts.scheme not in ("http", "https"):
            raise ValueError("must start with http:// or https:// (e.g. http://10.0.0.7:8080)")
        try:
            port = parts.port  # raises on a port that is not a number or out of range
        except ValueError:
            port = 0
        if port == 0:
            raise ValueError("has an invalid port (a number from 1 to 65535)")
        if not parts.hostname:
            raise ValueError("has no host (e.g. http://10.0.0.7:8080)")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not hold credentials: name the key's variable in api_key_env")
        if parts.path.strip("/") or parts.query or parts.fragment:
            raise ValueError(
                "must be the server's root, without a path, query or fragment "
                "(e.g. http://10.0.0.7:8080)"
            )
        return v.strip().rstrip("/")

    @property
    def base_url(self) -> str:
        """``scheme://host:port`` with the port always written (the default one spelled
        out), as the health checks and the gateway address a server."""
        parts = urlsplit(self.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        return f"{parts.scheme}://{host}:{port}"

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])


# What only a server this machine runs has: refused beside ``remote`` (issue 13). The
# model, its flags and devices, the binary and its environment, arguments and log files
# all describe a process that is spawned here; a remote instance spawns none. What
# applies to it: healthcheck (it is probed like any server), gateway (routing),
# restart_policy (how often the daemon tries again to reach it when a start times
# out), autostart.
LOCAL_ONLY = ("model", "server", "gpu", "binary", "env", "args", "logs")
# The model path a remote instance carries so that code written for local instances
# reads a value; never a file (preflight and the checks look at ``remote`` first).
REMOTE_MODEL_PLACEHOLDER = "(remote)"


def local_only_message(field: str) -> str:
    return (
        f"does not apply to a remote instance (this config sets remote): remove {field!r}, "
        "or remove 'remote' to run a server on this machine"
    )


class InstanceConfig(_Strict):
    schema_ref: str | None = Field(default=None, alias="$schema")
    name: str = Field(pattern=NAME_PATTERN, max_length=NAME_MAX)
    remote: RemoteConfig | None = Field(
        default=None,
        description="a server this machine does not run: health-checked and routed to, "
        "never spawned or signalled (model, server, gpu, binary, env, args and logs do "
        "not apply)",
    )
    model: ModelConfig
    server: ServerConfig = Field(default_factory=ServerConfig)
    gpu: GpuConfig = Field(default_factory=GpuConfig)
    env: dict[str, str] = Field(default_factory=dict)
    args: list[str] = Field(default_factory=list, description="extra llama-server arguments")
    binary: str | None = Field(
        default=None,
        description="llama-server to run: a path, or 'embedded' for the built-in engine",
    )
    autostart: StrictBool = Field(
        default=False, description="start this instance when the daemon starts after a reboot"
    )
    healthcheck: HealthcheckConfig = Field(default_factory=HealthcheckConfig)
    restart_policy: RestartPolicy = Field(default_factory=RestartPolicy)
    logs: LogsConfig = Field(default_factory=LogsConfig)
    gateway: InstanceGateway = Field(
        default_factory=InstanceGateway, description="routing and scheduling by the gateway"
    )

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _remote_or_local(cls, data: Any) -> Any:
        """A remote instance names no local-only field; it is given a placeholder model
        so that the model stays required, as it always was, for every local instance."""
        if not isinstance(data, dict) or data.get("remote") is None:
            return data
        present = [k for k in LOCAL_ONLY if k in data]
        if present:
            raise ValueError(f"{', '.join(present)}: {local_only_message(present[0])}")
        return {**data, "model": {"path": REMOTE_MODEL_PLACEHOLDER}}

    @model_validator(mode="after")
    def _remote_address(self) -> InstanceConfig:
        # server carries the remote's address and slots, so the leases and anything that
        # shows host:port read the server it routes to.
        r = self.remote
        if r is None:
            if self.gateway.kv_cache is True and "--no-slots" in self.args:
                raise ValueError(
                    "gateway.kv_cache: true needs the server's slots, and args has "
                    "'--no-slots': remove one of them"
                )
            return self
        if self.gateway.kv_cache is True:
            raise ValueError(
                "gateway.kv_cache: true is not available for a remote instance (its slots "
                "are its own server's to save): remove it, or set it to false"
            )
        if r.api_key_env is not None and self.healthcheck.probe == "completion":
            raise ValueError(
                "healthcheck.probe 'completion' is not available for a remote instance with "
                "api_key_env (the probes send no key): use probe 'health'"
            )
        self.server = ServerConfig.model_construct(host=r.host, port=r.port, parallel=r.parallel)
        return self

    @property
    def is_remote(self) -> bool:
        return self.remote is not None

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if self.remote is not None:  # the placeholders are not part of what was written
            for key in LOCAL_ONLY:
                data.pop(key, None)
        else:
            data.pop("remote", None)
        return data

    @field_validator("binary")
    @classmethod
    def _binary_not_empty(cls, v: str | None) -> str | None:
        # "" once fell through to whatever llama-server came next (issue 10).
        if v is not None and not v.strip():
            raise ValueError(
                "must not be empty: remove the field to find llama-server, or use 'embedded'"
            )
        return v

    @field_validator("env")
    @classmethod
    def _env_keys(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not key or "=" in key or "\0" in key:
                raise ValueError(f"invalid environment variable name {key!r}")
        return v


def int_bounds(model: type[BaseModel], field: str) -> tuple[int, int]:
    """A bounded integer field's inclusive range, as its ``ge``/``le`` declare it."""
    low = high = None
    for rule in model.model_fields[field].metadata:
        low = getattr(rule, "ge", low)
        high = getattr(rule, "le", high)
    if not (isinstance(low, int) and isinstance(high, int)):
        raise ValueError(f"{model.__name__}.{field} has no integer range")
    return low, high


SCHEMA_FILENAME = "llama-instance-schema.json"


def json_schema() -> dict[str, Any]:
    schema = InstanceConfig.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "llama-orchestrator instance"
    # Either a local instance (model required) or a remote one (none of LOCAL_ONLY).
    schema["required"] = [k for k in schema.get("required", []) if k != "model"]
    schema["oneOf"] = [
        {"required": ["model"], "not": {"required": ["remote"]}},
        {"required": ["remote"], "not": {"anyOf": [{"required": [k]} for k in LOCAL_ONLY]}},
    ]
    return schema
