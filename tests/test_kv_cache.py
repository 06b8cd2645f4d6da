"""The saved-slot cache in-process (issue 21): a server answered by an httpx transport, the
files real, the clock a fake one. What must hold whatever the server does: a save that
hangs gives the stop back at its budget, the disk budget drops the oldest files, a file
of another config hash is never restored, a changed file is refused before the server
sees it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from llama_orchestrator.daemon.events import EventBus
from llama_orchestrator.daemon.kvcache import KvCache

URL = "http://server"


class FakeServer:
    """llama-server's /slots routes over one folder; ``hang`` makes a save never answer."""

    def __init__(self, folder: Path, tokens: int = 100, size: int = 4096) -> None:
        self.folder, self.tokens, self.size = folder, tokens, size
        self.hang = False
        self.dies = False  # the server dies restoring (a file another build wrote)
        self.restored: list[str] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/slots":
            return httpx.Response(200, json=[{"id": 0, "n_prompt_tokens": self.tokens}])
        action = request.url.params["action"]
        name = json.loads(request.content)["filename"]
        if action == "save":
            (self.folder / name).write_bytes(b"k" * (self.size // 2))  # written part-way
            if self.hang:
                await asyncio.Event().wait()
            (self.folder / name).write_bytes(b"k" * self.size)
            return httpx.Response(200, json={"n_saved": self.tokens, "n_written": self.size})
        if self.dies:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        self.restored.append(name)
        return httpx.Response(200, json={"n_restored": self.tokens, "n_read": self.size})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def inline(work: Callable[[], Any]) -> Any:
    return work()


def cache(tmp_path: Path, server: FakeServer, clock: Clock, **kw: Any) -> KvCache:
    http = httpx.AsyncClient(transport=httpx.MockTransport(server))
    kv = KvCache(tmp_path / "kv", http, EventBus(), offload=inline, now=clock, **kw)
    kv.configure(max_mb=1, ttl_s=3600)
    return kv


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_a_save_that_hangs_gives_the_stop_back_at_its_budget(tmp_path: Path) -> None:
    folder = tmp_path / "kv" / "alpha"
    server = FakeServer(folder)
    server.hang = True
    kv = cache(tmp_path, server, Clock(), save_budget_s=0.2)
    t0 = time.monotonic()
    assert run(kv.save("alpha", URL, "hash-a", folder)) == 0
    assert time.monotonic() - t0 < 2.0  # the budget, not the server, ended it
    assert kv.files() == [] and list(folder.iterdir()) == []  # the part-written file is gone


def test_the_disk_budget_drops_the_oldest_files(tmp_path: Path) -> None:
    clock = Clock()
    server = FakeServer(tmp_path, size=400 * 1024)
    kv = cache(tmp_path, server, clock)
    for name in ("a", "b", "c"):  # three instances, 400 KiB each, under a 1 MiB budget
        server.folder = tmp_path / "kv" / name
        server.folder.mkdir(parents=True)
        assert run(kv.save(name, URL, "hash", server.folder)) == 1
        clock.now += 10
    assert [f.instance for f in kv.files()] == ["b", "c"]  # a, the oldest, went first
    assert not any((tmp_path / "kv" / "a").iterdir())
    assert kv.bytes_held() == 2 * 400 * 1024


def test_files_past_their_age_are_dropped_at_the_next_save(tmp_path: Path) -> None:
    clock = Clock()
    server = FakeServer(tmp_path / "kv" / "alpha")
    kv = cache(tmp_path, server, clock)
    kv.configure(max_mb=1, ttl_s=60)
    run(kv.save("alpha", URL, "h", server.folder))
    server.folder = tmp_path / "kv" / "beta"
    clock.now += 61
    run(kv.save("beta", URL, "h", server.folder))
    assert [f.instance for f in kv.files()] == ["beta"]


def test_a_file_of_another_config_hash_is_never_restored(tmp_path: Path) -> None:
    folder = tmp_path / "kv" / "alpha"
    server = FakeServer(folder)
    kv = cache(tmp_path, server, Clock())
    run(kv.save("alpha", URL, "old-hash", folder))
    (saved,) = kv.files()
    assert run(kv.restore("alpha", URL, "new-hash")) == 0
    assert server.restored == [] and kv.files() == [] and not Path(saved.file).exists()


def test_a_changed_file_is_refused_before_the_server_sees_it(tmp_path: Path) -> None:
    folder = tmp_path / "kv" / "alpha"
    server = FakeServer(folder)
    kv = cache(tmp_path, server, Clock())
    run(kv.save("alpha", URL, "h", folder))
    (saved,) = kv.files()
    Path(saved.file).write_bytes(b"x" * saved.bytes)  # same size, other bytes
    assert run(kv.restore("alpha", URL, "h")) == 0
    assert server.restored == [] and kv.files() == []
    assert kv.counts.restores["refused"] == 1


def test_the_index_outlives_the_daemon(tmp_path: Path) -> None:
    folder = tmp_path / "kv" / "alpha"
    server = FakeServer(folder)
    run(cache(tmp_path, server, Clock()).save("alpha", URL, "h", folder))
    again = cache(tmp_path, server, Clock())  # a new daemon reads the index
    assert run(again.restore("alpha", URL, "h")) == 1
    assert len(server.restored) == 1 and again.counts.restores["restored"] == 1


def test_a_file_the_server_died_on_is_not_tried_again(tmp_path: Path) -> None:
    folder = tmp_path / "kv" / "alpha"
    server = FakeServer(folder)
    kv = cache(tmp_path, server, Clock())
    run(kv.save("alpha", URL, "h", folder))
    server.dies = True
    assert run(kv.restore("alpha", URL, "h")) == 0
    assert kv.counts.restores["error"] == 1
    assert json.loads((tmp_path / "kv" / "index.json").read_text()) == {"files": []}
    server.dies = False
    again = cache(tmp_path, server, Clock())  # the daemon's next start of it: nothing left
    assert run(again.restore("alpha", URL, "h")) == 0 and server.restored == []
    assert list(folder.iterdir()) == []


def test_a_restored_file_stays_until_the_next_save_supersedes_it(tmp_path: Path) -> None:
    clock = Clock()
    folder = tmp_path / "kv" / "alpha"
    kv = cache(tmp_path, FakeServer(folder), clock)
    run(kv.save("alpha", URL, "h", folder))
    (first,) = kv.files()
    assert run(kv.restore("alpha", URL, "h")) == 1 and kv.files() == [first]
    clock.now += 1
    run(kv.save("alpha", URL, "h", folder))
    (second,) = kv.files()
    assert second.file != first.file and not Path(first.file).exists()


def test_saves_of_many_instances_stopped_at_once_all_land_in_the_index(tmp_path: Path) -> None:
    """`down --all` saves every instance at once: their index writes run in threads side
    by side. Each must finish (an error there once left instances in STOPPING for good)
    and the index on disk must list every file, not the last writer's view."""
    from llama_orchestrator.daemon.offload import in_thread

    folder = tmp_path / "kv" / "shared"
    folder.mkdir(parents=True)
    server = FakeServer(folder, size=1024)
    http = httpx.AsyncClient(transport=httpx.MockTransport(server))
    kv = KvCache(tmp_path / "kv", http, EventBus(), offload=in_thread, now=Clock())
    kv.configure(max_mb=64, ttl_s=3600)
    names = [f"i{n:02d}" for n in range(16)]

    async def all_at_once() -> list[int]:
        saves = (kv.save(name, URL, f"hash-{name}", folder) for name in names)
        return list(await asyncio.gather(*saves))

    assert run(all_at_once()) == [1] * len(names)
    on_disk = json.loads((tmp_path / "kv" / "index.json").read_text())
    assert sorted(f["instance"] for f in on_disk["files"]) == names


def test_a_slot_under_min_tokens_is_not_saved(tmp_path: Path) -> None:
    folder = tmp_path / "kv" / "alpha"
    server = FakeServer(folder, tokens=31)
    kv = cache(tmp_path, server, Clock())
    kv.configure(max_mb=1, ttl_s=60, min_tokens=32)
    assert run(kv.save("alpha", URL, "h", folder)) == 0 and kv.files() == []
    assert not folder.exists()  # not even its folder: nothing was to be written
    kv.configure(max_mb=1, ttl_s=60, min_tokens=0)
    assert run(kv.save("alpha", URL, "h", folder)) == 1
