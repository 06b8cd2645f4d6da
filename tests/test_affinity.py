"""Affinity across replicas: how a request maps to its key (gateway/affinity.py), and the
rule in the router (gateway/router.py) on scripted members and a fake clock: a keyed
request goes to its favourite while that replica is routable and has a free slot, else
least busy; a saturated, unready or draining favourite is skipped, never waited for.
Real servers are in test_affinity_servers.py."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

from llama_orchestrator.clock import FakeClock
from llama_orchestrator.config.gateway import parse_gateway
from llama_orchestrator.config.loader import ConfigError
from llama_orchestrator.gateway.affinity import (
    BLOCK_CHARS,
    Key,
    Pins,
    chat_key,
    prompt_key,
    request_key,
)
from llama_orchestrator.gateway.backend import Endpoint
from llama_orchestrator.gateway.errors import GatewayError
from llama_orchestrator.gateway.metrics import GatewayMetrics
from llama_orchestrator.gateway.request import Request
from llama_orchestrator.gateway.router import Lease, Router
from llama_orchestrator.gateway.settings import GatewaySettings
from llama_orchestrator.gateway.testing import ListDirectory


class Member:
    """A pool member the test scripts: its state, slots and cutoff."""

    def __init__(self, name: str, slots: int = 2) -> None:
        self.name = name
        self.aliases = ("pool",)
        self.on_demand = False
        self.slots = slots
        self.state = "running"
        self.in_flight = 0
        self.last_error: str | None = None
        self.context_size = 256
        self.cutoff = math.inf

    @property
    def routable(self) -> bool:
        return self.state == "running"

    def acquire(self) -> Endpoint | None:
        if not self.routable:
            return None
        self.in_flight += 1
        return Endpoint(self.name, "http://127.0.0.1:9")

    def release(self) -> None:
        self.in_flight -= 1


def pool(affinity: bool = True, **kw: object) -> tuple[Router, Member, Member]:
    a, b = Member("a"), Member("b")
    settings = GatewaySettings(port=0, affinity=affinity, **kw)  # type: ignore[arg-type]
    return Router(ListDirectory([a, b]), settings, FakeClock()), a, b


def take(router: Router, key: Key | None) -> Lease:
    members = router.members("pool")
    assert members is not None
    lease = router.try_acquire("pool", members, key)
    assert lease is not None
    return lease


def req(
    headers: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
    path: bytes = b"/v1/chat/completions",
) -> Request:
    return Request(b"POST", path, list(headers), b"", True, True, 0.0)


SYSTEM = {"role": "system", "content": "You answer briefly."}


def turns(first: str, n: int) -> list[list[dict[str, str]]]:
    """The message lists of turns 1..n of one conversation."""
    out, history = [], [SYSTEM]
    for i in range(n):
        history = [*history, {"role": "user", "content": f"{first} {i}"}]
        out.append(history)
        history = [*history, {"role": "assistant", "content": f"answer {i}"}]
    return out


# -- keys ---------------------------------------------------------------------------------


def test_turn_n_plus_1_finds_what_turn_n_pinned_and_other_conversations_do_not() -> None:
    one, two = turns("tell me about ducks", 3), turns("tell me about geese", 2)
    k1, k2, k3 = (chat_key(m) for m in one)
    assert k1.lookups == ()  # a first turn has no history of its own to find
    assert k1.pin in k2.lookups and k2.pin == k3.lookups[1] and k1.pin in k3.lookups
    assert k1.pin not in chat_key(two[1]).lookups
    assert chat_key(one[1]).pin == k2.pin  # the same messages, the same key
    # The system prompt alone is no history: a first turn finds nothing.
    assert chat_key([SYSTEM, {"role": "user", "content": "x"}]).lookups == ()
    # A different system prompt is a different conversation.
    assert chat_key(one[1], system="other").lookups[-1] != k2.lookups[-1]


def test_a_session_the_client_names_wins_and_a_prompt_is_keyed_by_whole_blocks() -> None:
    body = {"messages": turns("x", 2)[1], "prompt_cache_key": "conv-7"}
    by_header = request_key(req([(b"X-Session-Id", b"conv-7")]), body)
    by_field = request_key(req(), body)
    assert by_header is not None and by_field is not None
    assert by_header.pin == by_field.pin and by_header.lookups == (by_header.pin,)
    assert request_key(req([(b"x-session-id", b"conv-8")]), body).pin != by_header.pin  # type: ignore[union-attr]
    assert request_key(req(), None) is None  # a GET without a session header
    assert request_key(req(), {"model": "m"}) is None
    assert request_key(req(), {"prompt": "short"}) is None  # under one block
    text = "".join(chr(97 + i % 26) for i in range(3 * BLOCK_CHARS + 10))
    turn1, turn2 = prompt_key(text[: BLOCK_CHARS + 5]), prompt_key(text)
    assert turn1 is not None and turn2 is not None
    assert turn1.pin in turn2.lookups and len(turn2.lookups) == 3
    exact = prompt_key(text[: 2 * BLOCK_CHARS])  # its last block is the whole prompt
    assert exact is not None and exact.pin not in exact.lookups
    body = {"input": turns("y", 2)[1], "instructions": "be brief"}
    responses = request_key(req(path=b"/v1/responses"), body)
    assert responses is not None and len(responses.lookups) == 2
    # Embeddings' input is no conversation.
    assert request_key(req(path=b"/v1/embeddings"), {"input": ["x" * 300, "y"]}) is None
    assert request_key(req(path=b"/v1/embeddings"), {"input": "x" * 600}) is None


def test_pins_are_bounded_least_recently_used_first() -> None:
    pins = Pins(limit=2)
    k = [Key(i, (i,)) for i in range(3)]
    pins.pin(k[0], "a")
    pins.pin(k[1], "b")
    assert pins.find(k[0]) == "a"  # used: k[1] is now the oldest
    pins.pin(k[2], "a")
    assert (len(pins), pins.find(k[1]), pins.find(k[0])) == (2, None, "a")


# -- the rule -----------------------------------------------------------------------------


def test_a_conversation_sticks_to_its_replica_even_when_the_other_is_less_busy() -> None:
    router, a, b = pool()
    key = Key(1, (1,))
    first = take(router, key)
    first.release()
    favourite = a if first.instance is a else b
    held = favourite.acquire()  # the favourite is busier, with a slot still free
    assert held is not None
    for _ in range(3):
        lease = take(router, key)
        assert lease.instance is favourite
        lease.release()
    assert router.affinity == {("pool", "miss"): 1, ("pool", "hit"): 3}


def test_affinity_with_a_saturated_favourite_falls_back() -> None:
    """A saturated favourite is skipped (never waited for); the key moves."""
    router, a, b = pool()
    key = Key(7, (7,))
    assert take(router, key).instance is a  # idle tie: the first member
    a.in_flight = a.slots  # saturated by other requests
    lease = take(router, key)
    assert lease.instance is b
    assert router.affinity[("pool", "fallback")] == 1
    lease.release()
    a.in_flight = 0
    assert take(router, key).instance is b  # the key moved with the request
    assert router.affinity == {("pool", "miss"): 1, ("pool", "fallback"): 1, ("pool", "hit"): 1}


@pytest.mark.parametrize("why", ["starting", "stopped", "draining", "gone"])
def test_an_unready_draining_or_gone_favourite_falls_back(why: str) -> None:
    router, a, b = pool()
    key = Key(3, (3,))
    take(router, key).release()  # pinned to a
    if why == "draining":
        a.cutoff = -math.inf  # being drained to make room: takes only earlier waiters
    elif why == "gone":
        items = router._directory.items  # type: ignore[attr-defined]
        items[:] = [b, Member("c")]  # still a pool, without a
        router.refresh()
    else:
        a.state = why
    assert take(router, key).instance is not a
    assert router.affinity[("pool", "fallback")] == 1


def test_without_a_key_or_with_affinity_off_ties_rotate_as_before() -> None:
    router, _, _ = pool(affinity=False)
    key = Key(5, (5,))
    served = []
    for _ in range(4):
        lease = take(router, key)
        served.append(lease.instance.name)
        lease.release()
    assert served == ["a", "b", "a", "b"] and not router.affinity
    router, _, _ = pool()
    served = []
    for _ in range(2):
        lease = take(router, None)
        served.append(lease.instance.name)
        lease.release()
    assert served == ["a", "b"] and not router.affinity


def test_a_waiting_keyed_request_takes_the_first_free_slot_not_its_favourite() -> None:
    """Affinity never starves a pool: with both replicas full, a keyed request waits in
    the queue as any other and takes whichever slot frees first."""
    clock = FakeClock()
    a, b = Member("a", slots=1), Member("b", slots=1)
    router = Router(ListDirectory([a, b]), GatewaySettings(port=0), clock)
    key = Key(9, (9,))

    async def scenario() -> None:
        on_a = take(router, key)  # pinned to a, which is now full
        on_b = take(router, None)
        waiting = asyncio.ensure_future(router.acquire("pool", key=key))
        await clock.settle()
        assert not waiting.done()
        on_b.release()  # b frees first: the waiter goes there at once
        await clock.settle()
        lease = await asyncio.wait_for(waiting, 1)
        assert lease.instance is b and router.affinity[("pool", "fallback")] == 1
        lease.release()
        on_a.release()
        assert take(router, key).instance is b  # re-pinned

    asyncio.run(scenario())


def test_a_full_queue_still_refuses_keyed_requests() -> None:
    a, b = Member("a", slots=1), Member("b", slots=1)
    router = Router(
        ListDirectory([a, b]), GatewaySettings(port=0, queue_max_per_model=0), FakeClock()
    )
    take(router, None), take(router, None)

    async def ask() -> None:
        await router.acquire("pool", key=Key(1, (1,)))

    with pytest.raises(GatewayError) as e:
        asyncio.run(ask())
    assert e.value.status == 429


# -- metrics and settings -----------------------------------------------------------------


def test_metrics_show_hits_misses_and_fallbacks_per_pool() -> None:
    router, a, _ = pool()
    key = Key(2, (2,))
    take(router, key).release()
    take(router, key).release()
    a.state = "starting"
    take(router, key).release()
    metrics = GatewayMetrics(dict, dict, router.affinity)
    text = asyncio.run(metrics.exposition()).decode()
    for result in ("hit", "miss", "fallback"):
        assert f'llama_orch_affinity_total{{model="pool",result="{result}"}} 1.0' in text


def test_gateway_json_affinity_is_a_strict_boolean_on_by_default(tmp_path: Path) -> None:
    path = tmp_path / "gateway.json"
    assert parse_gateway("{}", path).affinity is True
    assert parse_gateway('{"affinity": false}', path).affinity is False
    with pytest.raises(ConfigError) as e:
        parse_gateway('{"affinity": "off"}', path)
    line = str(e.value.problems[0])
    assert "affinity" in line and "'off'" in line and str(path) in line
