"""The instance configuration model: the only door through which config reaches the engine.

Field for field the schema of the project plan, with its bounds. Unknown keys are errors
(``extra="forbid"``) so a typo is never silently ignored, and nothing is coerced from a
string that merely looks like a number (``strict`` scalars).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, field_validator

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


class GpuConfig(_Strict):
    backend: Backend = "cpu"
    device_id: int = Field(default=0, ge=0, le=63)
    layers: int = Field(default=0, ge=0, le=10_000, description="-ngl, layers offloaded to the GPU")


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

    @field_validator("aliases")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        seen: set[str] = set()
        for alias in v:
            if alias in seen:
                raise ValueError(f"alias {alias!r} is listed twice (list each name once)")
            seen.add(alias)
        return v


class InstanceConfig(_Strict):
    schema_ref: str | None = Field(default=None, alias="$schema")
    name: str = Field(pattern=NAME_PATTERN, max_length=NAME_MAX)
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
    return schema
