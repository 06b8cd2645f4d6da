"""The gateway's settings: what the daemon maps ``gateway.json`` onto."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GatewaySettings:
    host: str = "127.0.0.1"
    port: int = 8080
    api_keys: tuple[str, ...] = ()
    # Seconds a request waits for an instance to become ready (an on-demand start).
    load_timeout: float = 120.0
    # Requests waiting for a slot, per model name; one more is answered 429.
    queue_max_per_model: int = 64
    # Seconds a request may wait for a slot before it is answered 503.
    queue_timeout: float = 300.0
    # Request bodies above this are answered 413 (llama-server's own limit is larger).
    max_body_bytes: int = 32 * 1024 * 1024
    # Seconds to open a connection to an instance; a producing stream has no read timeout.
    connect_timeout: float = 5.0
    # A streaming request that waits gets an SSE comment at least this often (issue 9).
    loading_interval: float = 15.0
    # Circuit breaker: this many failed on-demand starts within ``breaker_window`` seconds
    # stop further attempts for ``breaker_cooldown`` seconds.
    breaker_failures: int = 3
    breaker_window: float = 60.0
    breaker_cooldown: float = 60.0
    # A client connection idle this long between requests is closed.
    keepalive_timeout: float = 75.0
    # Waiting requests re-check their instances this often, so a replica that becomes
    # routable without a gateway release (a start by ``up``, a health recovery) is seen.
    recheck_interval: float = 0.25
    # GET /metrics without a key even when keys are set (a scraper on loopback).
    metrics_public: bool = False
    # Origins of browser apps of other sites allowed without keys ("*": any); pages on
    # this machine always are, and with keys any origin is (cors.py).
    allowed_origins: tuple[str, ...] = ()
    # A pool's keyed requests prefer the replica that holds their prefix (affinity.py).
    affinity: bool = True

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"
