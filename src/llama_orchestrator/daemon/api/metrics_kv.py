"""The saved slots' figures on ``GET /metrics`` (issue 21; daemon/kvcache.py)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from llama_orchestrator.daemon.kvcache import KvCache


def kv_families(kv: KvCache) -> Iterator[Metric]:
    yield CounterMetricFamily(
        "llama_orch_kv_saves",
        "Slots saved to files before a stop (eviction, idle, down, restart).",
        value=kv.counts.saves,
    )
    restores = CounterMetricFamily(
        "llama_orch_kv_restores",
        "Saved slots brought back at a start, by result: restored, refused (the file "
        "changed or the server refused it), short (fewer tokens than saved), error.",
        labels=["result"],
    )
    for result, n in sorted(kv.counts.restores.items()):
        restores.add_metric([result], n)
    yield restores
    yield GaugeMetricFamily(
        "llama_orch_kv_cache_bytes",
        "Bytes the saved slot files take (gateway.json kv_cache.max_mb bounds them).",
        value=kv.bytes_held(),
    )
