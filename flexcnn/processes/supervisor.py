"""Run child processes, forward stop signals in escalating steps, restart the ones that end badly.

Each child runs in its own process group, so a Ctrl-C at the terminal reaches
only the supervisor, which then stops the children one step of its ladder per
request (:data:`~flexcnn.processes.spec.FINISH_INTERRUPT_KILL` by default):

1. first SIGTERM/SIGINT/SIGHUP: SIGTERM to each child: "finish or record the
   current trial, then exit" (what ``flexcnn optuna worker`` and ``wandb agent``
   do with SIGTERM);
2. second signal, or ``grace`` seconds after the first: SIGINT to each child's
   whole process group, like Ctrl-C in a terminal: runs checkpoint now and are
   marked interrupted;
3. third signal: SIGKILL to each child's process group.

A child that ends badly while no stop was asked for is restarted after a
growing delay, as its :class:`~flexcnn.processes.spec.RestartPolicy` allows and
its hooks agree; then its slot is reported as failed. What the supervisor says
about all this, and what else happens when a child ends, is up to its
:class:`~flexcnn.processes.events.SupervisorHooks`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

from flexcnn.exit_codes import EXIT_STOPPED
from flexcnn.processes.events import ChildExit, Outcome, SlotReport, StopRequest, SupervisorHooks, SupervisorReport
from flexcnn.processes.spec import FINISH_INTERRUPT_KILL, STOP_SIGNALS, ChildSpec, RestartPolicy, StopStep

# Exit statuses that mean "I stopped because I was asked to" (0, EXIT_STOPPED, 128+signal, or killed by it).
_STOPPED_CODES = frozenset(
    {0, EXIT_STOPPED, 128 + signal.SIGINT, 128 + signal.SIGTERM, -signal.SIGINT, -signal.SIGTERM}
)


@dataclass
class _Slot:
    spec: ChildSpec
    report: SlotReport
    proc: subprocess.Popen[bytes] | None = None
    pump: threading.Thread | None = None
    restart_at: float | None = None
    restarts: int = 0


class Supervisor:
    """Starts the children, watches them and stops them when told to (see the module docstring)."""

    def __init__(
        self,
        specs: Sequence[ChildSpec],
        *,
        policy: RestartPolicy | None = None,
        ladder: Sequence[StopStep] = FINISH_INTERRUPT_KILL,
        signals: Sequence[int] = STOP_SIGNALS,
        grace: float | None = None,
        prefix_output: bool = True,
        poll_interval: float = 0.1,
        hooks: SupervisorHooks | None = None,
    ) -> None:
        if not specs:
            raise ValueError("Supervisor needs at least one child")
        if not ladder:
            raise ValueError("Supervisor needs at least one stop step")
        self._slots = [_Slot(spec, SlotReport(spec.name)) for spec in specs]
        self._policy = policy or RestartPolicy()
        self._ladder = tuple(ladder)
        self._signals = tuple(signals)
        self._grace = grace
        self._prefix_output = prefix_output  # "[name] " before each line; off: the children share our stdout
        self._poll = poll_interval
        self._hooks = hooks or SupervisorHooks()
        self._pending: list[int] = []  # signals received, handled by the loop (not in the handler)
        self._stop_level = 0
        self._stop_since: float | None = None
        self._killed = False
        self._restarts = 0  # of all children, for a shared budget
        self._write_lock = threading.Lock()

    # -- public ---------------------------------------------------------------------------------

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """Ask for the next stop step, as if ``signum`` had been received (safe from a signal handler)."""
        self._pending.append(signum)

    def run(self) -> SupervisorReport:
        """Start every child and return once all of them have ended for good."""
        previous = self._install_handlers()
        try:
            for slot in self._slots:
                self._start(slot)
            self._hooks.launched({s.spec.name: s.proc.pid for s in self._slots if s.proc is not None})
            while not self._all_done():
                self._handle_pending_signals()
                self._check_grace()
                self._poll_children(time.monotonic())
                time.sleep(self._poll)
        finally:
            self._kill_leftovers()
            self._restore_handlers(previous)
        return SupervisorReport([slot.report for slot in self._slots], self._stop_level, self._killed)

    # -- children -------------------------------------------------------------------------------

    def _poll_children(self, now: float) -> None:
        for slot in self._slots:
            if slot.proc is not None:
                code = slot.proc.poll()
                if code is not None:
                    self._on_exit(slot, code, now)
            elif slot.restart_at is not None and now >= slot.restart_at:
                slot.restart_at = None
                self._start(slot)

    def _start(self, slot: _Slot) -> None:
        spec = slot.spec
        argv = spec.command()
        piped = self._prefix_output and _stdout_buffer() is not None
        slot.report.starts += 1
        try:
            # process_group=0: a terminal's Ctrl-C reaches only us; we decide what each child gets.
            proc = subprocess.Popen(
                argv,
                env=dict(spec.env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if piped else None,
                stderr=subprocess.STDOUT if piped else None,
                process_group=0,
            )
        except OSError as exc:
            self._hooks.start_failed(spec, argv, exc)
            self._on_exit(slot, 127, time.monotonic())
            return
        slot.proc = proc
        if piped and proc.stdout is not None:
            slot.pump = threading.Thread(target=self._pump, args=(proc.stdout, f"[{spec.name}] ".encode()), daemon=True)
            slot.pump.start()
        self._hooks.started(spec, proc.pid, argv, first=slot.report.starts == 1)

    def _on_exit(self, slot: _Slot, code: int, now: float) -> None:
        if slot.pump is not None:
            # A grandchild may still hold the pipe open; do not wait for it forever.
            slot.pump.join(timeout=2.0)
            slot.pump = None
        pid = slot.proc.pid if slot.proc is not None else None
        slot.proc = None
        slot.report.exit_codes.append(code)
        outcome = self._decide(slot, code)
        delay = 0.0
        if outcome == "restarting":
            slot.restarts += 1
            self._restarts += 1
            delay = self._policy.delay_for(self._restarts if self._policy.shared else slot.restarts)
            slot.restart_at = now + delay
        else:
            slot.report.outcome = outcome
        self._hooks.exited(
            ChildExit(
                name=slot.spec.name,
                pid=pid,
                code=code,
                outcome=outcome,
                stopping=self._stop_level > 0,
                restarts=self._restarts if self._policy.shared else slot.restarts,
                max_restarts=self._policy.max_restarts,
                delay=delay,
            )
        )

    def _decide(self, slot: _Slot, code: int) -> Outcome:
        if self._stop_level > 0:
            return "stopped" if code in _STOPPED_CODES or self._killed else "failed"
        if code == 0:
            return "finished"
        used = self._restarts if self._policy.shared else slot.restarts
        if not self._policy.restarts_after(code) or used >= self._policy.max_restarts:
            return "failed"
        return "restarting" if self._hooks.may_restart(slot.spec.name, code) else "ended"

    def _pump(self, stream: BinaryIO, prefix: bytes) -> None:
        out = _stdout_buffer()
        try:
            for line in iter(stream.readline, b""):
                if out is None:
                    continue
                with self._write_lock:
                    out.write(prefix + (line if line.endswith(b"\n") else line + b"\n"))
                    out.flush()
        except (OSError, ValueError):
            pass  # our stdout went away (closed pipe); the child keeps running
        finally:
            stream.close()

    def _all_done(self) -> bool:
        return all(slot.proc is None and slot.restart_at is None for slot in self._slots)

    def _running(self) -> list[_Slot]:
        return [slot for slot in self._slots if slot.proc is not None and slot.proc.poll() is None]

    # -- stopping -------------------------------------------------------------------------------

    def _install_handlers(self) -> dict[int, object]:
        if threading.current_thread() is not threading.main_thread():
            return {}  # signals are only delivered to the main thread; request_stop() still works
        previous: dict[int, object] = {}
        for signum in self._signals:
            previous[signum] = signal.signal(signum, lambda s, _f: self.request_stop(s))
        return previous

    @staticmethod
    def _restore_handlers(previous: dict[int, object]) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]

    def _handle_pending_signals(self) -> None:
        while self._pending:
            self._escalate(self._pending.pop(0))

    def _check_grace(self) -> None:
        if (
            self._grace is not None
            and self._stop_level == 1
            and self._stop_since is not None
            and time.monotonic() - self._stop_since >= self._grace
        ):
            self._escalate(None)

    def _escalate(self, signum: int | None) -> None:
        """Take the next step of the ladder (``signum``: the signal that asked; None: the grace ran out)."""
        self._stop_level = min(self._stop_level + 1, len(self._ladder))
        step = self._ladder[self._stop_level - 1]
        for slot in self._slots:  # nothing new starts once a stop was asked for
            if slot.restart_at is not None:
                slot.restart_at = None
                slot.report.outcome = "stopped"
        if self._stop_since is None:
            self._stop_since = time.monotonic()
        running = self._running()
        self._hooks.stopping(StopRequest(self._stop_level, step, len(running), signum, self._grace))
        for slot in running:
            _send(slot, step.signum, group=step.group)
        self._killed = self._killed or step.signum == signal.SIGKILL

    def _kill_leftovers(self) -> None:
        """Only reached with children alive when run() itself failed: never leave orphans on a GPU."""
        for slot in self._running():
            _send(slot, signal.SIGKILL, group=True)
            if slot.proc is not None:
                slot.proc.wait()


def _send(slot: _Slot, signum: int, *, group: bool) -> None:
    proc = slot.proc
    if proc is None:
        return
    try:
        if group:
            os.killpg(proc.pid, signum)  # the child leads its own group (process_group=0)
        else:
            proc.send_signal(signum)
    except ProcessLookupError:
        pass  # it exited in the meantime; the loop will collect it


def _stdout_buffer() -> BinaryIO | None:
    return getattr(sys.stdout, "buffer", None)
