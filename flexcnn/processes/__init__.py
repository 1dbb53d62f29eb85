"""Child processes under one supervisor: per-GPU sweep agents and the workers of ``flexcnn optuna run``.

``spec`` (what to run, when to restart, how to stop), ``events`` (what the
supervisor tells its user through hooks, and its report) and ``supervisor``
(the loop). It knows nothing of GPUs, W&B or Optuna: ``flexcnn.agents`` and
``flexcnn.search.fanout`` give it their children, words and restart rules.
"""

from flexcnn.processes.events import ChildExit, SlotReport, StopRequest, SupervisorHooks, SupervisorReport
from flexcnn.processes.spec import FINISH_INTERRUPT_KILL, STOP_SIGNALS, ChildSpec, RestartPolicy, StopStep
from flexcnn.processes.supervisor import Supervisor

__all__ = [
    "FINISH_INTERRUPT_KILL",
    "STOP_SIGNALS",
    "ChildExit",
    "ChildSpec",
    "RestartPolicy",
    "SlotReport",
    "StopRequest",
    "StopStep",
    "Supervisor",
    "SupervisorHooks",
    "SupervisorReport",
]
