"""What an instance actor's inbox holds: commands from clients, reports from its tasks.

Commands carry the future their sender awaits. Reports come from the actor's own side
tasks (exit watcher, readiness poll, health monitor, stop, backoff timer) and carry the
process they are about, so a report about a process the actor already let go is ignored.
Side tasks never change the actor's state themselves: they post one of these.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llama_orchestrator.engine.health import Probe
from llama_orchestrator.engine.process import ExitStatus, ServerProcess
from llama_orchestrator.errors import ErrorCode


@dataclass
class Outcome:
    """The reply to a command: what happened, in words a person and a script can use."""

    ok: bool
    message: str
    error: ErrorCode | None = None
    ready_ms: float | None = None
    stderr_tail: list[str] = field(default_factory=list)
    problems: list[dict[str, Any]] = field(default_factory=list)
    pid: int | None = None
    accepted: bool = False  # a start that was accepted and is still on its way to ready

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "message": self.message,
            "error": self.error.value if self.error else None,
            "ready_ms": self.ready_ms,
            "stderr_tail": self.stderr_tail,
            "problems": self.problems,
            "pid": self.pid,
            "accepted": self.accepted,
        }


Reply = asyncio.Future[Outcome]


# -- commands (from clients) ---------------------------------------------------------


@dataclass
class Start:
    reply: Reply
    wait_ready: bool = True  # False: reply once accepted (spawned) or refused
    reason: str = "up requested"
    force: bool = False  # past the budgets, knowingly (`up --force`)
    on_demand: bool = False  # asked for by a request through the gateway


DOWN_REASON = "down requested"


@dataclass
class Stop:
    reply: Reply
    reason: str = DOWN_REASON  # or why it was evicted / stopped for being idle
    grace: float | None = None  # seconds from SIGTERM to SIGKILL (None: server.stop_timeout)


@dataclass
class Restart:
    reply: Reply
    wait_ready: bool = True


Command = Start | Stop | Restart


# -- reports (from the actor's own tasks and the daemon) ------------------------------


@dataclass
class Exited:
    proc: ServerProcess


@dataclass
class Loading:
    proc: ServerProcess


@dataclass
class Ready:
    proc: ServerProcess
    ready_ms: float


@dataclass
class NotReady:
    proc: ServerProcess
    reason: str


@dataclass
class Checked:
    """One periodic health check of a running server."""

    proc: ServerProcess
    kind: str  # "health" or "completion"
    probe: Probe
    final: bool  # the last check of its round (a completion probe may follow a health one)
    # seconds the daemon's own loop was stalled during a failed check (0: it was not):
    # such a check is the daemon's fault and does not count against the server
    loop_lag: float = 0.0


@dataclass
class Stopped:
    proc: ServerProcess
    status: ExitStatus
    why: str  # "requested" or the reason it was stopped as unhealthy


@dataclass
class BackoffDone:
    generation: int  # ignored unless it is the actor's current backoff


@dataclass
class VersionKnown:
    version: str | None


@dataclass
class Resume:
    """After a daemon start: converge onto the record (watch, restart, autostart)."""

    rebooted: bool
    autostart: bool


@dataclass
class Autostart:
    pass


@dataclass
class Prepared:
    """What the checks before a start found (daemon/actor/preflight.py), run off the loop:
    a plan to spawn, or the refusal. ``generation`` names the start it answers: one
    called off meanwhile (a stop) is not the actor's current one, and is ignored."""

    generation: int
    # a Plan or RemotePlan (daemon/actor/preflight.py, which imports this module, so it is
    # not named here: the handler narrows it), or the refusal
    plan: Outcome | object


@dataclass
class Spawned:
    """A spawn's blocking part, done off the loop: what makes the run's handle, or why
    it failed. ``generation`` names the spawn it answers (one called off by a stop that
    came meanwhile is the actor's to stop at once)."""

    generation: int
    handle: Callable[[], ServerProcess] | OSError


@dataclass
class MemoryRead:
    """One reading of a run's memory per device (daemon/actor/memory.py): ``pid`` names
    the run it is about; ``readings`` are ``gpu/usage.py`` Measured or Unavailable."""

    pid: int
    readings: dict[str, Any]


@dataclass
class Admitted:
    """The scheduler's answer to a start that asked for admission."""

    ticket: int
    granted: bool
    reason: str = ""
    victims: tuple[str, ...] = ()  # instances stopped to make room for it
    code: str = ""  # why refused: "port", "budget", "drain_timeout", "device"
    device: str = ""  # where an ``auto`` instance was placed (daemon/placement.py)
    placed: str = ""  # why there


Report = (
    Exited
    | Loading
    | Ready
    | NotReady
    | Checked
    | Stopped
    | BackoffDone
    | VersionKnown
    | Resume
    | Autostart
    | Prepared
    | Spawned
    | Admitted
    | MemoryRead
)
Message = Command | Report
