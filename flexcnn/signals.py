"""Turn SIGTERM (and SIGHUP) into the same clean stop as Ctrl-C, and remember which signal it was.

Schedulers, ``docker stop``, Kubernetes and ``wandb agent --forward-signals``
end a run with SIGTERM (a closed terminal with SIGHUP). Python's default is to
die on the spot; raising KeyboardInterrupt instead lets run() mark the run
interrupted and keep its checkpoint. The signal is remembered so the run can
exit with ``128 + signal`` (what W&B expects of a preempted sweep run) and the
W&B run can be marked preempting.

Inside :func:`interrupts_deferred` (the few lines that write an epoch's record,
checkpoint and W&B row) the interrupt waits until the block ends, so the
checkpoint a resumed run starts from and the W&B history hold the same epochs.
Once stopping, further SIGTERM/SIGHUP are ignored (a scheduler may signal both
the agent, which forwards, and the run); a further Ctrl-C interrupts at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

# Signals that stop a run cleanly. SIGINT already raises KeyboardInterrupt; it is handled
# here too so that it can be deferred and named like the others.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)

_received: int | None = None  # the first stop signal of this process, if any
_deferring = 0  # depth of interrupts_deferred blocks in the main thread
_pending = False  # a signal arrived inside such a block


def received_signal() -> int | None:
    """The first stop signal this process received, or None."""
    return _received


def interrupt_exit_code() -> int:
    """``128 + signal`` of the stop signal received (130, Ctrl-C, when none was recorded)."""
    return 128 + (_received or signal.SIGINT)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM, SIGHUP and SIGINT raise KeyboardInterrupt in the main thread."""
    global _received, _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received, _pending = None, False  # one run, one record

    def handler(signum: int, frame: FrameType | None) -> None:
        global _received, _pending
        if _received is not None:
            # Already stopping. A scheduler that signals every process of a job (SLURM) sends the run a
            # second SIGTERM through the agent: it must not break the clean finish. Ctrl-C still does, at once.
            if signum == signal.SIGINT:
                raise KeyboardInterrupt(f"signal {signum}")
            return
        _received = signum
        if _deferring:
            _pending = True  # raised when the deferred block ends
            return
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """A stop signal received inside the block interrupts when the block has finished, not within it."""
    global _deferring, _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
    if _deferring == 0 and _pending:
        _pending = False
        raise KeyboardInterrupt(f"signal {_received}")
