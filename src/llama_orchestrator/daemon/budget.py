"""Budgets: whether a start fits, and which running instances make room for it.

Pure functions over plain values, so the rules are tested without processes or clocks;
the scheduler (daemon/scheduler.py) feeds them its holders and acts on the answer.

The rules (README, "Sharing the machine"):

- A start fits when, with it, at most ``max_running`` instances run and, on every
  device it uses, the memory estimates of the instances there stay within that
  device's budget.
- Otherwise victims are chosen among running instances that are not pinned and not
  already promised to another start: idle ones before busy ones (requests in flight
  or waiting for it, or still loading), then lower ``priority`` first, then the least
  recently used first. Only as many are taken as the start needs.
- A start that would not fit even with every unpinned instance stopped never will:
  it is refused at once, naming what is pinned and how much is missing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Budget:
    max_running: int | None = None
    memory_mb: Mapping[str, int] = field(default_factory=dict)  # device key -> MiB

    @property
    def limited(self) -> bool:
        return self.max_running is not None or bool(self.memory_mb)


@dataclass(frozen=True)
class Seat:
    """A running (or admitted) instance, as eviction sees it now."""

    name: str
    memory_mb: Mapping[str, int] = field(default_factory=dict)
    pinned: bool = False
    priority: int = 0
    busy: bool = False  # requests in flight or waiting for it, or still loading
    last_used: float = 0.0  # monotonic


@dataclass(frozen=True)
class Fits:
    pass


@dataclass(frozen=True)
class Evict:
    victims: tuple[str, ...]


@dataclass(frozen=True)
class Wait:
    """It would fit once instances promised to other starts have stopped."""

    why: str


@dataclass(frozen=True)
class Never:
    why: str


Choice = Fits | Evict | Wait | Never


def _used(seats: Iterable[Seat], device: str) -> int:
    return sum(s.memory_mb.get(device, 0) for s in seats)


def shortfall(
    memory_mb: Mapping[str, int], seats: Sequence[Seat], budget: Budget
) -> dict[str, int]:
    """What is missing for a start of ``memory_mb`` beside ``seats``: ``{"count": n}``
    for ``max_running``, ``{device: MiB}`` for memory; empty when it fits."""
    missing: dict[str, int] = {}
    if budget.max_running is not None and len(seats) + 1 > budget.max_running:
        missing["count"] = len(seats) + 1 - budget.max_running
    for device, need in memory_mb.items():
        limit = budget.memory_mb.get(device)
        if limit is None or need <= 0:
            continue
        over = _used(seats, device) + need - limit
        if over > 0:
            missing[device] = over
    return missing


def eviction_order(seats: Iterable[Seat]) -> list[Seat]:
    """Idle before busy, lower priority first, least recently used first."""
    return sorted(seats, key=lambda s: (s.busy, s.priority, s.last_used, s.name))


def choose(
    name: str,
    memory_mb: Mapping[str, int],
    seats: Sequence[Seat],
    budget: Budget,
    promised: frozenset[str] = frozenset(),
) -> Choice:
    """Whether ``name`` (needing ``memory_mb``) can start beside ``seats`` under
    ``budget``; ``promised`` are seats already given up to other starts."""
    others = [s for s in seats if s.name != name]
    if not shortfall(memory_mb, others, budget):
        return Fits()
    pinned = [s for s in others if s.pinned]
    never = shortfall(memory_mb, pinned, budget)
    if never:
        return Never(_never_sentence(name, memory_mb, pinned, budget, never))
    left = list(others)
    victims: list[str] = []
    for seat in eviction_order(s for s in others if not s.pinned and s.name not in promised):
        left.remove(seat)
        victims.append(seat.name)
        if not shortfall(memory_mb, left, budget):
            return Evict(tuple(victims))
    waiting_on = sorted(promised & {s.name for s in others})
    return Wait(f"waiting for {', '.join(waiting_on) or 'other starts'} to make room")


def _never_sentence(
    name: str,
    memory_mb: Mapping[str, int],
    pinned: Sequence[Seat],
    budget: Budget,
    missing: Mapping[str, int],
) -> str:
    held = ", ".join(s.name for s in pinned)
    parts: list[str] = []
    if "count" in missing:
        parts.append(
            f"max_running is {budget.max_running} and {len(pinned)} pinned instance"
            f"{'s' if len(pinned) != 1 else ''} run ({held})"
        )
    for device, over in missing.items():
        if device == "count":
            continue
        limit = budget.memory_mb[device]
        need = memory_mb[device]
        by = f"; pinned instances hold {_used(pinned, device)} MiB ({held})" if pinned else ""
        parts.append(
            f"it needs {need} MiB on {device}, the budget there is {limit} MiB{by}: "
            f"{over} MiB missing"
        )
    fix = "unpin an instance, raise the budget in gateway.json, or lower its context_size"
    return f"{name!r} cannot fit even after every eviction: {'; '.join(parts)} ({fix})"


class Seats(Protocol):
    """The running instances as the scheduler sees them (the daemon's actors)."""

    def seat(
        self, name: str, memory_mb: dict[str, int], draining: float | None, hold: float = 0.0
    ) -> Seat:
        """Its pinned/priority/busy/last_used now; ``draining``: since when it is a
        victim (requests queued for it before then, or before it became ready, and for
        ``hold`` seconds after that, still count as its work)."""
        ...

    def idle(self, name: str) -> tuple[float, int]:
        """``(seconds since its last request ended (0 while busy), its ttl (0: none))``."""
        ...

    def evict(self, name: str, reason: str) -> None:
        """Stop it (as ``down`` would, with ``reason``)."""
        ...

    def free_mib(self, device: str) -> int | None:
        """Free memory of a device now (may block: called in a thread)."""
        ...

    def queued(self, name: str) -> int:
        """Requests waiting in the gateway for it now."""
        ...

    def load_s(self, name: str) -> float:
        """Seconds its last load took (0: not known)."""
        ...


class NoSeats:
    """No instance information (tests of the port rule): nothing busy, nothing to stop."""

    def seat(
        self, name: str, memory_mb: dict[str, int], draining: float | None, hold: float = 0.0
    ) -> Seat:
        return Seat(name, memory_mb)

    def idle(self, name: str) -> tuple[float, int]:
        return 0.0, 0

    def evict(self, name: str, reason: str) -> None:
        return None

    def free_mib(self, device: str) -> int | None:
        return None

    def queued(self, name: str) -> int:
        return 0

    def load_s(self, name: str) -> float:
        return 0.0
