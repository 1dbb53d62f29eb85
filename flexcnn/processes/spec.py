"""What a supervisor is given: the children, when a crashed one starts again, and how to stop them."""

from __future__ import annotations

import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ChildSpec:
    """One slot: a name for logs (``gpu0``, ``w1``), the command and its full environment.

    ``argv_at_start``, when given, is called at each (re)start instead of using
    ``argv``: for a command that depends on when it starts, such as a time
    budget that shrinks with every restart. ``argv`` then describes it.
    """

    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    argv_at_start: Callable[[], Sequence[str]] | None = None

    def command(self) -> list[str]:
        """The command line to start now."""
        return list(self.argv_at_start() if self.argv_at_start is not None else self.argv)


@dataclass(frozen=True)
class RestartPolicy:
    """How often and how soon a child that ended badly is started again (never once a stop was asked for)."""

    max_restarts: int = 3
    delay: float = 5.0  # seconds before the first restart; doubles for each further one
    max_delay: float = 300.0
    # Restart only children killed by a signal (OOM killer, kill -9); any other non-zero exit is final.
    only_killed: bool = False
    # max_restarts counts the restarts of all children together instead of each child's own.
    shared: bool = False

    def delay_for(self, restart: int) -> float:
        """Seconds to wait before restart number ``restart`` (1-based)."""
        return min(self.delay * 2 ** (restart - 1), self.max_delay)

    def restarts_after(self, code: int) -> bool:
        """Whether an exit status calls for a restart, budget permitting (``code`` < 0: killed by signal -code)."""
        return code < 0 if self.only_killed else code != 0


@dataclass(frozen=True)
class StopStep:
    """One step of a stop: a signal, to the child alone or to its whole process group."""

    signum: int
    group: bool  # the child's own children (DataLoader workers, a sweep's run) get it too


# The steps each further stop request takes. A request beyond the last repeats the last step.
# Agents: finish the current trial; then interrupt it, like Ctrl-C in a terminal (it checkpoints and is
# marked interrupted); then kill.
FINISH_INTERRUPT_KILL = (
    StopStep(signal.SIGTERM, group=False),
    StopStep(signal.SIGINT, group=True),
    StopStep(signal.SIGKILL, group=True),
)
# The signals that ask the supervisor itself to stop.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
