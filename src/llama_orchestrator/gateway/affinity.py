"""Affinity across replicas: a conversation's next turn goes where its prefix already is.

llama-server keeps a conversation's prompt in a slot (and, across a swap, in a saved slot
file), and picks for each request the slot with the longest common prefix; a replica that
never saw the conversation processes the whole history again. So a pool remembers, per
key, the replica a keyed request was last sent to (its favourite) and prefers it while it
is routable and has a free slot; otherwise the request goes to the least busy member as
without affinity, and the key moves there. A saturated favourite is skipped, never waited
for. The router applies the rule (router.py); this module maps a request to its key and
holds the table.

How a request maps to a key, without tokenizing (cheap on the proxy's path):

* a session the client names: the ``x-session-id`` header, else the body's
  ``prompt_cache_key`` (OpenAI's field for the same purpose). The request looks the
  session up and pins it;
* else a chat (``messages``, or a list ``input`` on ``/v1/responses``): a hash chain over
  the system prompt (``system``/``instructions``) and the messages in order. The request
  pins the hash of all its messages and looks up the hashes of its strictly shorter
  prefixes that reach its first user message, longest first. Turn N+1 repeats turn N's
  messages and adds the answer and a new user message: its prefix of turn N's length
  finds the replica that served turn N;
* else a prompt (``prompt``, or a string ``input``): the same chain over fixed blocks of
  ``BLOCK_CHARS`` characters; a prompt shorter than one block has no key.

Everything else (GET routes, embeddings, unknown shapes) has no key and is routed least
busy. Hashes are Python's own (``hash``), valid within this process: the
table lives in memory and starts empty with the gateway.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Sequence

from llama_orchestrator.gateway.backend import Instance
from llama_orchestrator.gateway.request import Request

SESSION_HEADERS = (b"x-session-id",)
SESSION_FIELDS = ("prompt_cache_key",)
BLOCK_CHARS = 256
# Prefixes a request looks up at most (the longest ones).
MAX_LOOKUPS = 64
# Keys remembered per pool; the least recently used go first.
MAX_PINS = 10_000
RESULTS = ("hit", "miss", "fallback")


class Key:
    """What a request pins (``pin``) and what it looks for, longest first (``lookups``)."""

    __slots__ = ("lookups", "pin")

    def __init__(self, pin: int, lookups: tuple[int, ...]) -> None:
        self.pin = pin
        self.lookups = lookups

    def __repr__(self) -> str:
        return f"Key({self.pin}, {len(self.lookups)} lookups)"


def session_key(session: str) -> Key:
    k = hash(("session", session))
    return Key(k, (k,))


def request_key(req: Request, doc: dict[str, object] | None) -> Key | None:
    """The affinity key of a routed request (``doc``: its parsed JSON body, if any)."""
    for name in SESSION_HEADERS:
        value = req.header(name)
        if value:
            return session_key(value.decode("latin-1").strip())
    if doc is None:
        return None
    for field in SESSION_FIELDS:
        found = doc.get(field)
        if isinstance(found, str) and found:
            return session_key(found)
    messages = doc.get("messages")
    given = doc.get("input") if req.path == b"/v1/responses" else None  # not embeddings
    if not isinstance(messages, list):
        messages = given if isinstance(given, list) else None
    if messages:
        return chat_key(messages, doc.get("system"), doc.get("instructions"))
    prompt = doc.get("prompt")
    if not isinstance(prompt, str):
        prompt = given if isinstance(given, str) else None
    return prompt_key(prompt) if prompt else None


def _hash(item: object) -> int:
    if isinstance(item, dict) and len(item) == 2:
        role, content = item.get("role"), item.get("content")
        if isinstance(role, str) and isinstance(content, str):
            return hash((role, content))  # the common message, without a dump
    if item is None or isinstance(item, str):
        return hash(item)
    return hash(json.dumps(item, sort_keys=True, default=str))


def chat_key(messages: list[object], system: object = None, instructions: object = None) -> Key:
    h = hash(("chat", _hash(system), _hash(instructions)))
    chain: list[int] = []
    first_user = -1
    for i, m in enumerate(messages):
        h = hash((h, _hash(m)))
        chain.append(h)
        if first_user < 0 and isinstance(m, dict) and m.get("role") == "user":
            first_user = i
    shorter = chain[max(first_user, 0) : -1] if first_user >= 0 else []
    return Key(chain[-1], tuple(reversed(shorter[-MAX_LOOKUPS:])))


def prompt_key(prompt: str) -> Key | None:
    blocks = len(prompt) // BLOCK_CHARS
    if not blocks:
        return None
    h = hash("prompt")
    chain = []
    for k in range(blocks):
        h = hash((h, prompt[k * BLOCK_CHARS : (k + 1) * BLOCK_CHARS]))
        chain.append(h)
    # Prefixes strictly shorter than the prompt: a whole last block is the prompt itself.
    shorter = chain[:-1] if blocks * BLOCK_CHARS == len(prompt) else chain
    return Key(chain[-1], tuple(reversed(shorter[-MAX_LOOKUPS:])))


class Pins:
    """One pool's table: key -> the replica it was last sent to, LRU-bounded."""

    __slots__ = ("_table", "limit")

    def __init__(self, limit: int = MAX_PINS) -> None:
        self._table: collections.OrderedDict[int, str] = collections.OrderedDict()
        self.limit = limit

    def __len__(self) -> int:
        return len(self._table)

    def find(self, key: Key) -> str | None:
        """The favourite: the replica pinned for the longest prefix found, or None."""
        table = self._table
        for k in key.lookups:
            found = table.get(k)
            if found is not None:
                table.move_to_end(k)
                return found
        return None

    def pin(self, key: Key, instance: str) -> None:
        table = self._table
        table[key.pin] = instance
        table.move_to_end(key.pin)
        if len(table) > self.limit:
            table.popitem(last=False)


def favourite(
    pins: Pins, key: Key, members: Sequence[Instance], enqueued: float
) -> tuple[Instance | None, str]:
    """The key's favourite when it can take the request now (result ``hit``); else None
    and ``miss`` (no favourite) or ``fallback`` (gone, not routable, drained or full)."""
    name = pins.find(key)
    if name is None:
        return None, "miss"
    for inst in members:
        if inst.name == name:
            free = inst.routable and inst.in_flight < inst.slots and enqueued <= inst.cutoff
            return (inst, "hit") if free else (None, "fallback")
    return None, "fallback"
