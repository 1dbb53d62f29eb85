"""Turn SIGTERM into the same clean stop as Ctrl-C.

Schedulers, ``docker stop``, Kubernetes and ``wandb agent`` end a run with
SIGTERM. Python's default is to die on the spot; raising KeyboardInterrupt
instead lets run() mark the run interrupted and keep its checkpoint.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
