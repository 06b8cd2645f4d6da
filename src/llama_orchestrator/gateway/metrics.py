"""``GET /metrics``: one Prometheus exposition for the whole machine (issue 12).

Three sources, collected by one custom ``Collector`` per scrape:

* the gateway's own figures: requests by model, instance and status code, request
  duration and time to first byte (from the ``RequestRecord`` of each request), queue
  depth per model, requests in flight per instance, affinity hits, misses and fallbacks
  per pool (router.py);
* ``extra``: families the host adds (the daemon: instance states, restarts, memory
  estimates and budgets, evictions), so this package needs nothing from the daemon;
* each running instance's own llama.cpp metrics (``llama-server --metrics``), scraped in
  parallel once per scrape with a short timeout and re-exported with an ``instance``
  label. An instance that does not answer in time leaves a gap, never a hung scrape.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Iterable, Iterator, Mapping
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry

from llama_orchestrator.gateway.records import RequestRecord

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT_S = 1.0
MAX_SCRAPE_BYTES = 8 * 1024 * 1024
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
TTFB_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

Families = Callable[[], Iterable[Metric]]
# instance name -> (base URL http(s)://host:port, the key it wants or None): a remote
# instance's metrics are behind its api key (issue 13)
Targets = Callable[[], "dict[str, tuple[str, str | None]]"]
Gauges = Callable[[], dict[str, int]]


class _Collect(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


class GatewayMetrics:
    def __init__(
        self,
        queue_depths: Gauges,
        in_flight: Gauges,
        affinity: Mapping[tuple[str, str], int] | None = None,
    ) -> None:
        self._queue_depths = queue_depths
        self._in_flight = in_flight
        self._affinity = affinity  # (model, result) -> keyed picks, read at each scrape
        self.extra: Families | None = None  # set by the host (the daemon's supervisor view)
        self.targets: Targets | None = None  # instances whose llama.cpp metrics are scraped
        self.timeout = SCRAPE_TIMEOUT_S
        labels = ("model", "instance")
        self._requests = Counter(
            "llama_orch_requests_total",
            "Requests through the gateway, by model, instance and HTTP status code.",
            (*labels, "code"),
            registry=None,
        )
        # /upstream/NAME/... calls (a dashboard polling /slots) name no model: counted
        # apart, so that they are not "requests" of a model "" (issue 19)
        self._upstream = Counter(
            "llama_orch_upstream_requests_total",
            "Requests through /upstream/INSTANCE/..., by instance and HTTP status code.",
            ("instance", "code"),
            registry=None,
        )
        self._duration = Histogram(
            "llama_orch_request_duration_seconds",
            "Time from a request's arrival to the end of its answer.",
            labels,
            buckets=DURATION_BUCKETS,
            registry=None,
        )
        self._ttfb = Histogram(
            "llama_orch_time_to_first_byte_seconds",
            "Time from a request's arrival to the first byte of the instance's answer.",
            labels,
            buckets=TTFB_BUCKETS,
            registry=None,
        )

    def observe(self, record: RequestRecord) -> None:
        model, instance = record.model or "", record.instance or ""
        if record.model is None and record.path.startswith("/upstream/"):
            self._upstream.labels(instance, str(record.status)).inc()
            return
        self._requests.labels(model, instance, str(record.status)).inc()
        self._duration.labels(model, instance).observe(record.duration_s)
        if record.ttfb_s is not None:
            self._ttfb.labels(model, instance).observe(record.ttfb_s)

    def _own(self) -> Iterator[Metric]:
        yield from self._requests.collect()
        yield from self._upstream.collect()
        yield from self._duration.collect()
        yield from self._ttfb.collect()
        queued = GaugeMetricFamily(
            "llama_orch_queue_depth", "Requests waiting for a slot, per model.", labels=["model"]
        )
        for model, depth in sorted(self._queue_depths().items()):
            queued.add_metric([model], depth)
        yield queued
        flying = GaugeMetricFamily(
            "llama_orch_in_flight",
            "Requests the gateway has sent to an instance and not yet finished.",
            labels=["instance"],
        )
        for name, count in sorted(self._in_flight().items()):
            flying.add_metric([name], count)
        yield flying
        if self._affinity is not None:
            yield self._affinity_family(self._affinity)

    @staticmethod
    def _affinity_family(counts: Mapping[tuple[str, str], int]) -> Metric:
        family = CounterMetricFamily(
            "llama_orch_affinity",
            "Keyed requests to a pool: sent to the replica holding their prefix (hit), "
            "with no replica known for it (miss), or past a favourite that was saturated, "
            "draining or not ready (fallback).",
            labels=["model", "result"],
        )
        models = sorted({model for model, _ in counts})
        for model in models:
            for result in ("hit", "miss", "fallback"):
                family.add_metric([model, result], counts.get((model, result), 0))
        return family

    async def exposition(self) -> bytes:
        """The whole exposition: the instances are scraped first, in parallel."""
        targets = self.targets() if self.targets is not None else {}
        scraped = await asyncio.gather(
            *(scrape(url, key, timeout=self.timeout) for url, key in targets.values()),
            return_exceptions=True,
        )
        families = list(self._own())
        if self.extra is not None:
            try:
                families.extend(self.extra())
            except Exception:  # a broken hook leaves its families out, not the scrape
                log.exception("the metrics hook failed")
        taken = {f.name for f in families}
        merged: dict[str, Metric] = {}
        for name, found in zip(targets, scraped, strict=True):
            if isinstance(found, BaseException):
                continue
            for family in found:
                if family.name in taken:
                    continue
                into = merged.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                for s in family.samples:
                    into.add_sample(s.name, {**s.labels, "instance": name}, s.value, s.timestamp)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collect(families + list(merged.values())))
        return generate_latest(registry)


CONTENT_TYPE = CONTENT_TYPE_LATEST.encode()


async def scrape(base_url: str, key: str | None = None, *, timeout: float) -> list[Metric]:
    """One instance's ``/metrics``, parsed; raises on a timeout, an error or a non-200."""
    return await asyncio.wait_for(_scrape(base_url, key), timeout)


async def _scrape(base_url: str, key: str | None) -> list[Metric]:
    parts = urlsplit(base_url)
    tls = parts.scheme == "https"
    host, port = parts.hostname or "127.0.0.1", parts.port or (443 if tls else 80)
    context = ssl.create_default_context() if tls else None
    reader, writer = await asyncio.open_connection(host, port, ssl=context)
    try:
        netloc = parts.netloc.encode()
        auth = b"Authorization: Bearer %s\r\n" % key.encode() if key else b""
        writer.write(
            b"GET /metrics HTTP/1.1\r\nHost: %s\r\n%sConnection: close\r\n\r\n" % (netloc, auth)
        )
        raw = await reader.read(MAX_SCRAPE_BYTES)
        while len(raw) < MAX_SCRAPE_BYTES:
            more = await reader.read(MAX_SCRAPE_BYTES - len(raw))
            if not more:
                break
            raw += more
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split()
    if len(status) < 2 or status[1] != b"200":
        raise ValueError(f"{base_url}/metrics answered {status[1:2]}")
    if b"transfer-encoding: chunked" in head.lower():
        body = _unchunk(body)
    return list(text_string_to_metric_families(body.decode("utf-8", "replace")))


def _unchunk(body: bytes) -> bytes:
    out, rest = [], body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out.append(rest[:size])
        rest = rest[size + 2 :]
    return b"".join(out)
