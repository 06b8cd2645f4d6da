"""``GET /v1/events?logs=NAME``: one instance's log lines as events (issue 12).

The lines are followed as ``llama-orch logs -f`` follows them (logs/follow.py: across
rotations, truncation, a file deleted and created again), in a thread of their own,
and handed to the event loop through a bounded queue (the thread puts without waiting,
then wakes the loop once per batch): a client that does not read fills it, and is then
dropped like a slow subscriber of the bus (its stream ends with a ``dropped`` event).
The thread ends within one poll once the stream ends (the client went away, the daemon
stopped).

Each line is ``{"instance", "kind": "log", "ts", "stream", "file", "line"}``, ``stream``
being ``stdout`` or ``stderr``; what the follower has to say about the files (missing,
back) comes as ``stream: "note"``.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any

from llama_orchestrator.daemon.events import SUBSCRIBER_QUEUE
from llama_orchestrator.errors import OrchestratorError
from llama_orchestrator.home import Home
from llama_orchestrator.logs.reader import POLL_INTERVAL, LogLine, LogStream

log = logging.getLogger("llama_orchestrator.events")

LOG_KIND = "log"
MAX_TAIL = 10_000  # lines a stream may ask to start with (?tail=)


def log_files(home: Home, name: str, loaded: Any | None, known: bool) -> dict[str, Path]:
    """Where the instance's server writes: ``loaded``'s ``logs`` (the config it runs, or
    the file's, as the daemon's Configs read it), else the defaults (a config that no
    longer loads, or was removed while its server runs, may still have a server logging
    with the old one). ``known``: the daemon has an actor or a config file of it. Raises
    UnknownInstance when it has neither."""
    from llama_orchestrator.config.loader import UnknownInstance
    from llama_orchestrator.config.schema import LogsConfig
    from llama_orchestrator.engine.command import log_paths

    if loaded is None:
        if not known:
            raise UnknownInstance(name, home.instance_names())
        defaults = LogsConfig()
        return {
            stream: home.root / template.replace("{name}", name)
            for stream, template in (("stdout", defaults.stdout), ("stderr", defaults.stderr))
        }
    if loaded.remote is not None:
        raise RemoteLog(
            f"{name!r} is a remote instance ({loaded.remote.url}): its server writes its log "
            "on the machine that runs it; follow it there"
        )
    out, err = log_paths(loaded, home.root)
    return {"stdout": out, "stderr": err}


class RemoteLog(OrchestratorError, LookupError):
    """A remote instance has no log on this machine."""


class LogFeed:
    """One instance's log lines, followed in a thread; ``await get()`` them."""

    def __init__(
        self,
        name: str,
        files: dict[str, Path],
        *,
        tail: int = 0,
        maxsize: int = SUBSCRIBER_QUEUE,
        interval: float = POLL_INTERVAL,
    ) -> None:
        self.name = name
        self.files = files
        self.tail = tail
        self.maxsize = maxsize
        self.interval = interval
        self.dropped = False  # it fell ``maxsize`` lines behind
        # room for the first ``tail`` lines besides the bound on falling behind
        self.queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize + tail)
        self._wake = asyncio.Event()
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(
            target=self._run, name=f"log-events-{self.name}", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._stop.set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    async def get(self) -> dict[str, Any] | None:
        """The next line; None once dropped and drained."""
        while True:
            try:
                return self.queue.get_nowait()
            except queue.Empty:
                if self.dropped:
                    return None
            self._wake.clear()
            if self.queue.empty() and not self.dropped:
                await self._wake.wait()

    # -- the thread ----------------------------------------------------------------------

    def _send(self, item: dict[str, Any]) -> None:
        if self.dropped:
            return
        try:
            self.queue.put_nowait(item)
        except queue.Full:
            self.dropped = True
            self._stop.set()
            log.warning("a log stream of %s fell %d lines behind: dropped", self.name, self.maxsize)

    def _wake_loop(self) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(self._wake.set)
        except RuntimeError:  # the loop is closed: the daemon is gone
            self._stop.set()

    def _line(self, line: LogLine) -> dict[str, Any]:
        return {
            "instance": self.name,
            "kind": LOG_KIND,
            "ts": line.time,
            "stream": line.stream,
            "file": str(self.files[line.stream]),
            "line": line.text.decode("utf-8", "replace"),
        }

    def _note(self, message: str) -> None:
        self._send(
            {
                "instance": self.name,
                "kind": LOG_KIND,
                "ts": time.time(),
                "stream": "note",
                "file": None,
                "line": message,
            }
        )
        self._wake_loop()

    def _run(self) -> None:
        from llama_orchestrator.logs.follow import follow
        from llama_orchestrator.logs.reader import LogReadError, open_stream, read_instances

        logs: list[LogStream] = []
        try:
            for stream, path in self.files.items():
                logs.append(open_stream(stream, path))
            if self.tail:
                for line in read_instances([logs], tail=self.tail, partial=False):
                    self._send(self._line(line))
                self._wake_loop()
            for batch in follow(logs, self._stop, interval=self.interval, note=self._note):
                for line in batch:
                    if self.dropped:
                        break
                    self._send(self._line(line))
                if batch or self.dropped:
                    self._wake_loop()
        except LogReadError as e:
            self._note(str(e))
        except Exception:  # never a traceback in the stream, nor a dead thread unsaid
            log.exception("following the logs of %s failed", self.name)
            self._note(f"following the logs of {self.name} failed; see the daemon's log")
        finally:
            for opened in logs:
                opened.close()
            self._wake_loop()
