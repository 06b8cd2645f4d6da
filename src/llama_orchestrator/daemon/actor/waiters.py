"""Who waits for what on one instance: the callers of its commands, until their answer."""

from __future__ import annotations

from dataclasses import dataclass, field

from llama_orchestrator.daemon.actor import messages as m
from llama_orchestrator.daemon.actor.messages import Outcome


def answer(replies: list[m.Reply], outcome: Outcome) -> None:
    for fut in replies:
        if not fut.done():
            fut.set_result(outcome)
    replies.clear()


@dataclass
class Waiters:
    ready: list[m.Reply] = field(default_factory=list)  # a start in progress: until ready
    accepted: list[m.Reply] = field(default_factory=list)  # `up --detach`: until spawned
    stopped: list[m.Reply] = field(default_factory=list)  # a stop in progress
    after_stop: list[m.Start | m.Restart] = field(default_factory=list)  # starts behind a stop

    def join_start(self, cmd: m.Start | m.Restart, spawned_pid: int | None) -> None:
        """Wait for the start in progress (``spawned_pid``: it has a process already)."""
        if cmd.wait_ready:
            self.ready.append(cmd.reply)
        elif spawned_pid is not None:
            cmd.reply.set_result(Outcome(True, "starting", pid=spawned_pid, accepted=True))
        else:
            self.accepted.append(cmd.reply)

    def start_failed(self, outcome: Outcome) -> None:
        """Everyone waiting for the start gets ``outcome``."""
        answer(self.ready, outcome)
        answer(self.accepted, outcome)

    def restart_queue(self) -> list[m.Start | m.Restart]:
        """The callers of the start in progress, moved behind the stop of a restart."""
        moved: list[m.Start | m.Restart] = [m.Start(f) for f in self.ready]
        self.ready = []
        return moved

    def drop_after_stop(self, outcome: Outcome) -> None:
        answer([c.reply for c in self.after_stop], outcome)
        self.after_stop.clear()

    def take_after_stop(self) -> list[m.Start | m.Restart]:
        queued, self.after_stop = self.after_stop, []
        return queued
