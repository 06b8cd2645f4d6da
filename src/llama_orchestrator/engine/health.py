"""Probing llama-server's ``/health``: 200 ``{"status":"ok"}`` ready, 503 loading."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

from llama_orchestrator.engine.states import Health


@dataclass(frozen=True)
class Probe:
    health: Health
    status_code: int | None
    latency_ms: float
    detail: str

    @property
    def ok(self) -> bool:
        return self.health is Health.HEALTHY


FALLBACK_PATH = "/v1/health"


async def probe_health(
    client: httpx.AsyncClient, base_url: str, path: str, timeout: float
) -> Probe:
    """One GET of ``base_url + path``; a 404 falls back to ``/v1/health``."""
    t0 = time.monotonic()
    try:
        r = await client.get(base_url + path, timeout=timeout)
        if r.status_code == 404 and path != FALLBACK_PATH:
            r = await client.get(base_url + FALLBACK_PATH, timeout=timeout)
    except httpx.TimeoutException:
        return Probe(Health.UNHEALTHY, None, _ms(t0), "timed out")
    except httpx.HTTPError as e:
        return Probe(Health.UNHEALTHY, None, _ms(t0), f"connection failed: {type(e).__name__}")
    ms = _ms(t0)
    if r.status_code == 200:
        return Probe(Health.HEALTHY, 200, ms, "ok")
    if r.status_code == 503:
        return Probe(Health.LOADING, 503, ms, "loading model")
    return Probe(Health.ERROR, r.status_code, ms, f"HTTP {r.status_code}: {r.text[:200]}")


def _ms(t0: float) -> float:
    return (time.monotonic() - t0) * 1000.0


async def probe_completion(client: httpx.AsyncClient, base_url: str, timeout: float) -> Probe:
    """Prove the server can still infer: a one-token completion must answer 200.

    A server that answers /health but fails every completion is a known failure in the
    field; /health alone cannot see it.
    """
    t0 = time.monotonic()
    body = {"prompt": "a", "max_tokens": 1, "temperature": 0}
    try:
        r = await client.post(base_url + "/v1/completions", json=body, timeout=timeout)
    except httpx.TimeoutException:
        return Probe(Health.UNHEALTHY, None, _ms(t0), "completion probe timed out")
    except httpx.HTTPError as e:
        return Probe(
            Health.UNHEALTHY, None, _ms(t0), f"completion probe failed: {type(e).__name__}"
        )
    ms = _ms(t0)
    if r.status_code == 200:
        return Probe(Health.HEALTHY, 200, ms, "completion ok")
    return Probe(
        Health.UNHEALTHY,
        r.status_code,
        ms,
        f"completion probe: HTTP {r.status_code}: {r.text[:160]}",
    )
