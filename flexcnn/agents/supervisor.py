"""Run one child process per slot (GPU), forward stop signals, restart crashes up to a limit.

Each child runs in its own process group, so a Ctrl-C at the terminal reaches
only this supervisor, which then stops the children in escalating steps:

1. first SIGTERM/SIGINT/SIGHUP: ``stop_signal`` (SIGTERM) to each child: "finish
   or record the current trial, then exit" (what ``flexcnn optuna worker`` and
   ``wandb agent`` do with SIGTERM);
2. second signal, or ``grace`` seconds after the first: SIGINT to each child's
   whole process group, like Ctrl-C in a terminal: runs checkpoint now and are
   marked interrupted;
3. third signal: SIGKILL to each child's process group.

A child that exits non-zero while no stop was asked for is restarted after a
growing delay, at most ``max_restarts`` times; then its slot is reported as
failed and the supervisor exits non-zero once the other slots are done.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from flexcnn.agents.redact import redact_argv

log = logging.getLogger("flexcnn.agents")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# Exit statuses that mean "I stopped because I was asked to" (0, 128+signal, or killed by it).
_STOPPED_CODES = frozenset({0, 128 + signal.SIGINT, 128 + signal.SIGTERM, -signal.SIGINT, -signal.SIGTERM})


@dataclass(frozen=True)
class ChildSpec:
    """One slot: a name for logs (``gpu0``), the command and its full environment."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str]


@dataclass(frozen=True)
class RestartPolicy:
    """How often and how soon a crashed child is started again."""

    max_restarts: int = 3
    delay: float = 5.0  # seconds before the first restart; doubles for each further one
    max_delay: float = 300.0

    def delay_for(self, restart: int) -> float:
        """Seconds to wait before restart number ``restart`` (1-based)."""
        return min(self.delay * 2 ** (restart - 1), self.max_delay)


@dataclass
class SlotReport:
    """What happened in one slot: how often it started, its exit codes and how it ended."""

    name: str
    starts: int = 0
    exit_codes: list[int] = field(default_factory=list)
    outcome: str = "running"  # finished | stopped | failed


@dataclass
class SupervisorReport:
    """The outcome of :meth:`Supervisor.run`."""

    slots: list[SlotReport]
    stop_level: int  # 0: ran to the end, 1: graceful stop, 2: interrupted, 3: killed

    @property
    def failed(self) -> list[SlotReport]:
        return [slot for slot in self.slots if slot.outcome == "failed"]

    @property
    def exit_code(self) -> int:
        """1 when a slot failed, 130 when the children had to be killed, else 0."""
        if self.failed:
            return 1
        return 130 if self.stop_level >= 3 else 0


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
        grace: float | None = None,
        stop_signal: int = signal.SIGTERM,
        prefix_output: bool = True,
        poll_interval: float = 0.1,
    ) -> None:
        if not specs:
            raise ValueError("Supervisor needs at least one child")
        self._slots = [_Slot(spec, SlotReport(spec.name)) for spec in specs]
        self._policy = policy or RestartPolicy()
        self._grace = grace
        self._stop_signal = stop_signal
        self._prefix_output = prefix_output
        self._poll = poll_interval
        self._pending: list[int] = []  # signals received, handled by the loop (not in the handler)
        self._stop_level = 0
        self._stop_since: float | None = None
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
            while not self._all_done():
                self._handle_pending_signals()
                self._check_grace()
                now = time.monotonic()
                for slot in self._slots:
                    if slot.proc is not None:
                        code = slot.proc.poll()
                        if code is not None:
                            self._on_exit(slot, code, now)
                    elif slot.restart_at is not None and now >= slot.restart_at:
                        slot.restart_at = None
                        self._start(slot)
                time.sleep(self._poll)
        finally:
            self._kill_leftovers()
            self._restore_handlers(previous)
        return SupervisorReport([slot.report for slot in self._slots], self._stop_level)

    # -- children -------------------------------------------------------------------------------

    def _start(self, slot: _Slot) -> None:
        spec = slot.spec
        piped = self._prefix_output and _stdout_buffer() is not None
        try:
            # process_group=0: a terminal's Ctrl-C reaches only us; we decide what each child gets.
            proc = subprocess.Popen(
                list(spec.argv),
                env=dict(spec.env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if piped else None,
                stderr=subprocess.STDOUT if piped else None,
                process_group=0,
            )
        except OSError as exc:
            log.error("%s: could not start %s: %s", spec.name, shlex.join(redact_argv(spec.argv)), exc)
            slot.report.starts += 1
            self._on_exit(slot, 127, time.monotonic())
            return
        slot.proc = proc
        slot.report.starts += 1
        if piped and proc.stdout is not None:
            slot.pump = threading.Thread(target=self._pump, args=(proc.stdout, f"[{spec.name}] ".encode()), daemon=True)
            slot.pump.start()
        cuda = spec.env.get("CUDA_VISIBLE_DEVICES")
        log.info(
            "%s: started pid %d%s: %s",
            spec.name,
            proc.pid,
            f" (CUDA_VISIBLE_DEVICES={cuda})" if cuda is not None else "",
            shlex.join(redact_argv(spec.argv)),
        )

    def _on_exit(self, slot: _Slot, code: int, now: float) -> None:
        if slot.pump is not None:
            # A grandchild may still hold the pipe open; do not wait for it forever.
            slot.pump.join(timeout=2.0)
            slot.pump = None
        slot.proc = None
        slot.report.exit_codes.append(code)
        name = slot.spec.name
        if self._stop_level > 0:
            clean = code in _STOPPED_CODES or self._stop_level >= 3
            slot.report.outcome = "stopped" if clean else "failed"
            (log.info if clean else log.error)("%s: exited with code %d after the stop request", name, code)
        elif code == 0:
            slot.report.outcome = "finished"
            log.info("%s: finished (exit code 0)", name)
        elif slot.restarts < self._policy.max_restarts:
            slot.restarts += 1
            delay = self._policy.delay_for(slot.restarts)
            slot.restart_at = now + delay
            log.warning(
                "%s: exited with code %d; restart %d of %d in %.0f s",
                name,
                code,
                slot.restarts,
                self._policy.max_restarts,
                delay,
            )
        else:
            slot.report.outcome = "failed"
            log.error(
                "%s: exited with code %d and was already restarted %d time(s) (--max-restarts %d); giving up on it",
                name,
                code,
                slot.restarts,
                self._policy.max_restarts,
            )

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
        for signum in STOP_SIGNALS:
            previous[signum] = signal.signal(signum, lambda s, _f: self.request_stop(s))
        return previous

    @staticmethod
    def _restore_handlers(previous: dict[int, object]) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]

    def _handle_pending_signals(self) -> None:
        while self._pending:
            signum = self._pending.pop(0)
            self._escalate(f"received {signal.Signals(signum).name}")

    def _check_grace(self) -> None:
        if (
            self._grace is not None
            and self._stop_level == 1
            and self._stop_since is not None
            and time.monotonic() - self._stop_since >= self._grace
        ):
            self._escalate(f"agents still running {self._grace:g} s after the stop request")

    def _escalate(self, why: str) -> None:
        self._stop_level = min(self._stop_level + 1, 3)
        for slot in self._slots:  # nothing new starts once a stop was asked for
            if slot.restart_at is not None:
                slot.restart_at = None
                slot.report.outcome = "stopped"
        running = self._running()
        if self._stop_level == 1:
            self._stop_since = time.monotonic()
            name = signal.Signals(self._stop_signal).name
            log.warning(
                "%s: asking %d agent(s) to finish their current trial (%s); signal again to interrupt the trials",
                why,
                len(running),
                name,
            )
            for slot in running:
                _send(slot, self._stop_signal, group=False)
        elif self._stop_level == 2:
            log.warning("%s: interrupting the current trials (SIGINT); signal again to kill the agents", why)
            for slot in running:
                _send(slot, signal.SIGINT, group=True)
        else:
            log.warning("%s: killing %d agent(s) (SIGKILL)", why, len(running))
            for slot in running:
                _send(slot, signal.SIGKILL, group=True)

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
