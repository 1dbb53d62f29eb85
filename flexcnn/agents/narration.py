"""What ``flexcnn agent`` logs as its agents start, end, restart and are stopped."""

from __future__ import annotations

import logging
import shlex
import signal
from collections.abc import Sequence

from flexcnn.agents.redact import redact_argv
from flexcnn.processes import ChildExit, ChildSpec, StopRequest, SupervisorHooks

log = logging.getLogger("flexcnn.agents")


class AgentLog(SupervisorHooks):
    """Log lines on ``flexcnn.agents``, command lines with their passwords masked."""

    def started(self, spec: ChildSpec, pid: int, argv: Sequence[str], *, first: bool) -> None:
        cuda = spec.env.get("CUDA_VISIBLE_DEVICES")
        log.info(
            "%s: started pid %d%s: %s",
            spec.name,
            pid,
            f" (CUDA_VISIBLE_DEVICES={cuda})" if cuda is not None else "",
            shlex.join(redact_argv(argv)),
        )

    def start_failed(self, spec: ChildSpec, argv: Sequence[str], error: OSError) -> None:
        log.error("%s: could not start %s: %s", spec.name, shlex.join(redact_argv(argv)), error)

    def exited(self, event: ChildExit) -> None:
        name, code = event.name, event.code
        if event.stopping:
            clean = event.outcome == "stopped"
            (log.info if clean else log.error)("%s: exited with code %d after the stop request", name, code)
        elif event.outcome == "finished":
            log.info("%s: finished (exit code 0)", name)
        elif event.outcome == "restarting":
            log.warning(
                "%s: exited with code %d; restart %d of %d in %.0f s",
                name,
                code,
                event.restarts,
                event.max_restarts,
                event.delay,
            )
        else:
            log.error(
                "%s: exited with code %d and was already restarted %d time(s) (--max-restarts %d); giving up on it",
                name,
                code,
                event.restarts,
                event.max_restarts,
            )

    def stopping(self, request: StopRequest) -> None:
        if request.signum is not None:
            why = f"received {signal.Signals(request.signum).name}"
        else:
            why = f"agents still running {request.grace:g} s after the stop request"
        if request.level == 1:
            log.warning(
                "%s: asking %d agent(s) to finish their current trial (%s); signal again to interrupt the trials",
                why,
                request.running,
                signal.Signals(request.step.signum).name,
            )
        elif request.level == 2:
            log.warning("%s: interrupting the current trials (SIGINT); signal again to kill the agents", why)
        else:
            log.warning("%s: killing %d agent(s) (SIGKILL)", why, request.running)
