"""Preempted or stopped: what a signal-interrupted sweep run tells W&B.

Under ``wandb agent --forward-signals`` a SIGTERM reaches the run in two cases
that W&B must hear differently:

* **preemption** (the scheduler, ``docker stop``, a spot reclaim, the agent's own
  shutdown): the run calls ``mark_preempting()`` and finishes with ``128 +
  signal``; W&B requeues it and hands it back to an agent, which resumes it
  from its run folder's last.pt;
* **a stop W&B asked for** (hyperband early termination, *Stop* in the UI):
  the agent's ``stop`` command terminates the run with the same SIGTERM. Marking
  that run preempting would make W&B requeue a run its own rule stopped, again
  and again. So before marking, the run asks the server whether it was told to
  stop (the request wandb's own stop checker polls every 15 s, asked at once
  here), and such a run finishes with exit code 0 instead, like an Optuna
  trial that was pruned: W&B records it as stopped, and the agent does not
  count it as a failure.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger("flexcnn.reporters.wandb")

STOP_STATUS_TIMEOUT = 5.0  # seconds; a preempted run has little time, and offline answers at once


class StopRequests:
    """wandb's ``stop_fn``: remembers that W&B asked the run to stop, then interrupts it as wandb would."""

    def __init__(self) -> None:
        self.requested = threading.Event()

    def __call__(self) -> None:
        from wandb.sdk.lib.interrupt import interrupt_main

        self.requested.set()
        interrupt_main()


def server_asked_to_stop(run: Any, timeout: float = STOP_STATUS_TIMEOUT) -> bool:
    """Whether W&B's server has asked ``run`` to stop; False when it cannot tell (offline, no answer in time).

    The same stop-status request wandb's ``RunStopChecker`` sends; wandb has no public
    call for it, so anything unexpected counts as "not asked".
    """
    try:
        from wandb.proto import wandb_internal_pb2 as pb

        request = pb.Record(request=pb.Request(stop_status=pb.StopStatusRequest()))
        result = run._interface._deliver(request).wait_or(timeout=timeout)
        return bool(result.response.stop_status_response.run_should_stop)
    except Exception as exc:  # a private wandb API: never let it cost the run its clean finish
        log.debug("could not ask W&B whether run %s was stopped: %s", getattr(run, "id", "?"), exc)
        return False
