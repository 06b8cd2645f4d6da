"""The per-process overhead of each device, learnt from what instances really used there
(issue 18, "the scheduler decides on the truth").

One sample per run: the first reading after an instance is ready, less its estimate
(``gpu/overhead.py``: the median of the last few samples, the backend's documented
default until a device has one). The samples are kept in the state database's ``meta``
table under :data:`KEY` (one small JSON object, written through the daemon's batched
writer), so a daemon restarted tomorrow starts from what it learnt today.
"""

from __future__ import annotations

import json
import logging
from typing import Protocol

from llama_orchestrator.gpu.overhead import (
    WINDOW,
    MiB,
    backend_of,
    default_overhead,
    gap,
    learnt_overhead,
)

KEY = "memory_overheads"
log = logging.getLogger("llama_orchestrator.supervisor")


class Meta(Protocol):
    """The part of the state store this needs (state/db.py ``StateStore``)."""

    def meta_get(self, key: str) -> str | None: ...

    def meta_set(self, key: str, value: str) -> None: ...


class Overheads:
    """Per device key: the samples (bytes, oldest first) and the overhead they give."""

    def __init__(self, store: Meta | None = None) -> None:
        self._store = store
        self._gaps: dict[str, list[int]] = {}
        if store is not None:
            self._gaps = _parse(store.meta_get(KEY))

    def bytes(self, device: str) -> int:
        """The overhead one more process on ``device`` is counted for."""
        default = default_overhead(backend_of(device))
        return learnt_overhead(self._gaps.get(device, ()), default)

    def mib(self, device: str) -> int:
        return -(-self.bytes(device) // MiB)

    def learnt(self, device: str) -> bool:
        """Has ``device`` a measurement yet (else the backend's default holds)?"""
        return bool(self._gaps.get(device))

    def learn(self, device: str, estimate: int, measured: int) -> None:
        """One run's sample: ``measured`` bytes on ``device`` against its ``estimate``."""
        samples = self._gaps.setdefault(device, [])
        samples.append(gap(estimate, measured))
        del samples[:-WINDOW]
        if self._store is not None:
            self._store.meta_set(KEY, json.dumps(self._gaps, sort_keys=True))

    def devices(self) -> dict[str, int]:
        """Every device with samples, and its overhead (for the metrics)."""
        return {device: self.bytes(device) for device in sorted(self._gaps)}


def _parse(text: str | None) -> dict[str, list[int]]:
    """The stored samples; a value this cannot read is dropped (the defaults hold)."""
    if not text:
        return {}
    try:
        found = json.loads(text)
        return {
            str(k): [int(x) for x in v][-WINDOW:] for k, v in found.items() if isinstance(v, list)
        }
    except (ValueError, TypeError, AttributeError):
        log.warning("the state database's %s is not readable; using the defaults", KEY)
        return {}
