"""Is a TCP port free, and if not, who holds it? (issue 2, parts 3 and 4)

The test is a real ``bind``: the only answer that matches what llama-server will meet.
How the probe socket is set up matters, because a careless option hides a listener:

- Linux: ``SO_REUSEADDR`` on. Linux still refuses the bind while any socket listens on
  the port (on any address), but ignores connections left in TIME_WAIT by a server that
  just stopped, exactly as llama-server (which sets the option too) will when it binds.
  Without it, a port freed a second ago by ``down`` would look held.
- Windows: ``SO_EXCLUSIVEADDRUSE``; there ``SO_REUSEADDR`` would let the probe bind over
  a live listener.
- Other systems (macOS, BSD): no option; BSD's ``SO_REUSEADDR`` lets a specific address
  bind beside a wildcard listener, which would hide it.

Finding the holder is best effort: ``psutil.net_connections`` needs privileges on some
systems, and another user's process may not reveal its PID or command line.
"""

from __future__ import annotations

import errno
import socket
import sys
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

_IN_USE = {errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", -1), getattr(errno, "WSAEACCES", -1)}
_WILDCARDS = {"", "0.0.0.0", "::", "*"}
_MAX_COMMAND = 160


@dataclass(frozen=True)
class PortHolder:
    pid: int | None
    command: str | None

    def __str__(self) -> str:
        if self.pid is None:
            return "an unknown process"
        if not self.command:
            return f"PID {self.pid}"
        return f"PID {self.pid} ({self.command})"


def _probe_socket(family: int) -> socket.socket:
    s = socket.socket(family, socket.SOCK_STREAM)
    if sys.platform == "win32":
        s.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)  # type: ignore[attr-defined,unused-ignore]
    elif sys.platform.startswith("linux"):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return s


def is_bindable(host: str, port: int) -> bool:
    """True when ``host:port`` can be bound now; False when something holds it.

    Raises OSError for any other failure (unknown host, an address not on this machine).
    """
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, sockaddr = infos[0]
    with _probe_socket(family) as s:
        try:
            s.bind(sockaddr)
        except OSError as e:
            if e.errno in _IN_USE or getattr(e, "winerror", None) in _IN_USE:
                return False
            raise
    return True


def _listeners(port: int) -> list[tuple[str, int | None]]:
    """(address, pid) of every socket listening on ``port``."""
    import psutil

    try:
        conns = [(c, c.pid) for c in psutil.net_connections(kind="inet")]
    except psutil.AccessDenied:
        conns = _connections_per_process()
    return [
        (str(c.laddr.ip), pid)
        for c, pid in conns
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
    ]


def _connections_per_process() -> list[tuple[Any, int | None]]:
    """Fallback where the system-wide table needs privileges (macOS): process by process."""
    import psutil

    found: list[tuple[Any, int | None]] = []
    for proc in psutil.process_iter():
        try:
            method = getattr(proc, "net_connections", None) or proc.connections
            found.extend((c, proc.pid) for c in method(kind="inet"))
        except psutil.Error:
            continue
    return found


def _command_of(pid: int) -> str | None:
    import psutil

    try:
        proc = psutil.Process(pid)
        try:
            text = " ".join(proc.cmdline())
        except psutil.AccessDenied:
            text = ""
        text = text or proc.name()
    except psutil.Error:
        return None
    return text if len(text) <= _MAX_COMMAND else text[: _MAX_COMMAND - 3] + "..."


def find_holder(host: str, port: int) -> PortHolder:
    """Who listens on ``port`` (preferring a listener on ``host`` or a wildcard address)."""
    try:
        listeners = _listeners(port)
    except Exception:  # psutil can fail in many platform-specific ways; the answer is optional
        listeners = []
    ranked = sorted(listeners, key=lambda x: (x[1] is None, x[0] not in (host, *_WILDCARDS)))
    if not ranked or ranked[0][1] is None:
        return PortHolder(None, None)
    pid = ranked[0][1]
    return PortHolder(pid, _command_of(pid))


def port_holder(host: str, port: int) -> PortHolder | None:
    """None when ``host:port`` is free; otherwise who holds it, as far as can be told.

    Raises OSError when the address cannot be tried at all (e.g. an unknown host).
    """
    if is_bindable(host, port):
        return None
    return find_holder(host, port)


def find_free_port(host: str = "127.0.0.1", start: int = 8001, taken: Collection[int] = ()) -> int:
    """The first port from ``start`` that is bindable and not in ``taken``.

    ``taken`` holds the ports other configured instances use: they may be stopped now
    and still need their port later.
    """
    for port in range(start, 65536):
        if port not in taken and is_bindable(host, port):
            return port
    raise OSError(errno.EADDRINUSE, f"no free port on {host} from {start} up")
