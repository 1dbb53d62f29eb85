"""Tell every reporter of a run each hook, in the order the ``Reporter`` contract gives."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from flexcnn.reporters.base import Reporter, RunInfo, RunResult, StopRun

log = logging.getLogger(__name__)


class Broadcast:
    """The reporters of one run, record keepers first, each told every hook.

    ``on_epoch`` comes in two halves around the epoch's checkpoint: ``record_epoch``
    (record keepers, before it) and ``report_epoch`` (everyone else, after it).
    """

    def __init__(self, reporters: Sequence[Reporter]) -> None:
        self.reporters = tuple(sorted(reporters, key=lambda r: not r.keeps_record))  # stable: else as given
        self._keepers = tuple(r for r in self.reporters if r.keeps_record)
        self._others = tuple(r for r in self.reporters if not r.keeps_record)

    def on_start(self, info: RunInfo) -> None:
        for reporter in self.reporters:
            reporter.on_start(info)

    def on_epoch_start(self, epoch: int, batches: int) -> None:
        for reporter in self.reporters:
            reporter.on_epoch_start(epoch, batches)

    def on_batch(self, images: int) -> None:
        for reporter in self.reporters:
            reporter.on_batch(images)

    def record_epoch(self, epoch: int, metrics: dict[str, float]) -> StopRun | None:
        """Tell the record keepers, before the checkpoint; the first StopRun raised, if any."""
        return _tell(self._keepers, epoch, metrics)

    def report_epoch(self, epoch: int, metrics: dict[str, float]) -> StopRun | None:
        """Tell the others, once the checkpoint is written; the first StopRun raised, if any."""
        return _tell(self._others, epoch, metrics)

    def on_end(self, result: RunResult) -> OSError | None:
        """Tell everyone, also when one cannot write its files; the first such OSError, if any."""
        failed: OSError | None = None
        for reporter in self.reporters:
            try:
                reporter.on_end(result)
            except OSError as exc:
                failed = failed or exc
                log.warning("%s could not finish: %s", type(reporter).__name__, exc)
        return failed


def _tell(reporters: Sequence[Reporter], epoch: int, metrics: dict[str, float]) -> StopRun | None:
    """``on_epoch`` to each; a StopRun from one (pruning) waits until all have seen the epoch."""
    stop: StopRun | None = None
    for reporter in reporters:
        try:
            reporter.on_epoch(epoch, metrics)
        except StopRun as exc:
            stop = stop or exc
    return stop
