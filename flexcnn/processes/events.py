"""What a supervisor tells its user as children start, end and are stopped, and what it reports at the end."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from flexcnn.processes.spec import ChildSpec, StopStep

# finished: exit 0 with no stop asked for; stopped: ended cleanly after a stop request; restarting: starts
# again after ``delay``; failed: ended badly for good; ended: a restart the hooks vetoed (the work is done).
Outcome = Literal["finished", "stopped", "restarting", "failed", "ended"]


@dataclass(frozen=True)
class ChildExit:
    """A child ended: its exit status (-N: killed by signal N) and what the supervisor does about it."""

    name: str
    pid: int | None  # None: the command could not be started at all
    code: int
    outcome: Outcome
    stopping: bool  # a stop had been asked for
    restarts: int  # restarts so far (all children's with a shared budget), this one included
    max_restarts: int
    delay: float = 0.0  # seconds until the restart


@dataclass(frozen=True)
class StopRequest:
    """A stop step about to be sent: the ``level``-th request (1-based) and why it came."""

    level: int
    step: StopStep
    running: int  # children it is sent to
    signum: int | None  # the signal that asked for it; None: the grace period after the first ran out
    grace: float | None


class SupervisorHooks:
    """Callbacks of :class:`~flexcnn.processes.supervisor.Supervisor`; each default does nothing.

    A user overrides what it needs: its own messages, work to do when a child
    ends (re-queue what it was doing), or a veto on restarts. Hooks run in the
    supervisor's loop, between polls. When a child ends, ``may_restart`` is
    asked first (only if the policy would restart it), then ``exited`` is told
    the outcome; a restart starts on a later poll, so ``exited`` runs before it.
    """

    def started(self, spec: ChildSpec, pid: int, argv: Sequence[str], *, first: bool) -> None:
        """``spec`` runs ``argv`` as ``pid`` (``first``: its first start, not a restart)."""

    def start_failed(self, spec: ChildSpec, argv: Sequence[str], error: OSError) -> None:
        """``argv`` could not be started; the supervisor handles it as an exit with status 127."""

    def launched(self, pids: Mapping[str, int]) -> None:
        """Every child has had its first start (``pids``: name -> pid of those that started)."""

    def may_restart(self, name: str, code: int) -> bool:
        """Whether ``name``, which exited with ``code``, may start again (the policy would restart it)."""
        return True

    def exited(self, event: ChildExit) -> None:
        """A child ended; ``event.outcome`` says what happens next."""

    def stopping(self, request: StopRequest) -> None:
        """A stop step is about to be sent to the running children."""


@dataclass
class SlotReport:
    """What happened in one slot: how often it started, its exit codes and how it ended."""

    name: str
    starts: int = 0
    exit_codes: list[int] = field(default_factory=list)
    outcome: str = "running"  # then one of Outcome, other than restarting


@dataclass
class SupervisorReport:
    """The outcome of :meth:`Supervisor.run <flexcnn.processes.supervisor.Supervisor.run>`."""

    slots: list[SlotReport]
    stop_level: int  # 0: ran to the end; else how many steps of the stop ladder were taken
    killed: bool = False  # a SIGKILL step was taken

    @property
    def failed(self) -> list[SlotReport]:
        return [slot for slot in self.slots if slot.outcome == "failed"]

    @property
    def exit_code(self) -> int:
        """1 when a slot failed, 130 when the children had to be killed, else 0."""
        if self.failed:
            return 1
        return 130 if self.killed else 0
