"""Who holds a listening socket: the proof that an answer on a port came from our server.

Readiness counts a 200 from ``/health`` only when the server's own process (or a child
it started) holds the listening socket (issue 10: another instance configured on the
same port answers too). On Linux the kernel is asked for listening sockets only
(sock_diag netlink) and the server's own file descriptors are read; elsewhere psutil
lists the process's connections.
"""

from __future__ import annotations

import os
import socket
import struct
import sys

import psutil

# sock_diag (Linux netlink), for "who listens on this port" without /proc/net/tcp
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_TCP_LISTEN = 10


def listens_on(pid: int, port: int) -> bool | None:
    """Does ``pid`` (or a process it started) hold a listening socket on ``port``?

    None when it cannot be told (no permission, a platform without the information):
    callers then take an answer on the port at face value. On Linux the answer comes
    from /proc directly (well under a millisecond); psutil's per-process connection list
    reads and parses every socket of the system, tens of milliseconds on a busy machine.
    """
    if sys.platform.startswith("linux"):
        return _listens_on_linux(pid, port)
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    unknown = False
    for p in procs:
        try:
            method = getattr(p, "net_connections", None) or p.connections
            conns = method(kind="tcp")
        except psutil.AccessDenied:
            unknown = True
            continue
        except psutil.Error:
            continue
        if any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in conns):
            return True
    return None if unknown else False


def _listening_inodes(port: int) -> set[str]:
    """Inodes of the TCP sockets listening on ``port``, by sock_diag netlink.

    The kernel returns only listening sockets (a handful), where /proc/net/tcp would list
    every socket of the machine, thousands of TIME_WAITs included (~15 ms to generate).
    """
    inodes: set[str] = set()
    for family in (socket.AF_INET, socket.AF_INET6):
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
            req = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 1 << _TCP_LISTEN)
            req += bytes(48)  # inet_diag_sockid: unused for a dump by state
            head = struct.pack("=IHHII", 16 + len(req), _SOCK_DIAG_BY_FAMILY, 0x301, 1, 0)
            nl.send(head + req)  # flags: NLM_F_REQUEST | NLM_F_DUMP
            done = False
            while not done:
                data = nl.recv(65536)
                off = 0
                while off + 16 <= len(data):
                    length, kind = struct.unpack_from("=IH", data, off)
                    if kind == 3:  # NLMSG_DONE
                        done = True
                        break
                    if kind == 2:  # NLMSG_ERROR
                        raise OSError("sock_diag refused the request")
                    sport = struct.unpack_from("!H", data, off + 16 + 4)[0]
                    inode = struct.unpack_from("=I", data, off + 16 + 4 + 48 + 16)[0]
                    if sport == port:
                        inodes.add(str(inode))
                    off += (length + 3) & ~3
                if not data:
                    break
    return inodes


def _listens_on_linux(pid: int, port: int) -> bool | None:
    try:
        inodes = _listening_inodes(port)
    except OSError:
        return None
    if not inodes:
        return False
    wanted = {f"socket:[{i}]" for i in inodes}
    found = _holds_socket(pid, wanted)
    if found is not False:
        return found
    try:  # a wrapper that started the server as its child
        children = [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return None
    return any(_holds_socket(c, wanted) for c in children)


def _holds_socket(pid: int, wanted: set[str]) -> bool | None:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                return True
        except OSError:
            continue
    return False
