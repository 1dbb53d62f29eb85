"""Human-readable progress on the terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from flexcnn.reporters.base import Reporter, RunInfo, RunResult


class ConsoleReporter(Reporter):
    """One line per epoch, a progress bar within epochs on a terminal, and a summary."""

    def __init__(self, stream: TextIO | None = None, progress: bool = True) -> None:
        self.stream = stream or sys.stderr
        self.progress = progress and self.stream.isatty()
        self.epochs = 0
        self._batches = self._done = 0
        self._last_draw = 0.0

    def _say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def on_start(self, info: RunInfo) -> None:
        cfg = info.config
        self.epochs = cfg.train.epochs
        resumed = f", resumed at epoch {info.start_epoch + 1}" if info.start_epoch else ""
        self._say(
            f"flexcnn: {cfg.model.kind} on {cfg.data.source} ({len(info.classes)} classes; "
            f"train {info.train_size}, val {info.val_size}, test {info.test_size}) on {info.device}, "
            f"{info.parameter_counts['params/trainable']:,} trainable parameters{resumed}"
        )
        self._say(f"run folder: {info.run_dir}")

    def on_epoch_start(self, epoch: int, batches: int) -> None:
        self._batches, self._done, self._epoch = batches, 0, epoch

    def on_batch(self, images: int) -> None:
        if not self.progress:
            return
        self._done += 1
        now = time.monotonic()
        if now - self._last_draw < 0.1 and self._done < self._batches:
            return
        self._last_draw = now
        width = 30
        filled = int(width * self._done / max(self._batches, 1))
        print(
            f"\r  epoch {self._epoch + 1}/{self.epochs} [{'#' * filled}{'.' * (width - filled)}] "
            f"{self._done}/{self._batches}",
            end="",
            file=self.stream,
            flush=True,
        )

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        if self.progress:
            print("\r" + " " * 70 + "\r", end="", file=self.stream)
        self._say(
            f"epoch {epoch + 1:>3}/{self.epochs}  train/loss {metrics['train/loss']:.4f}  "
            f"train/acc {metrics['train/acc']:.4f}  val/loss {metrics['val/loss']:.4f}  "
            f"val/acc {metrics['val/acc']:.4f}  lr {metrics['lr']:.2e}  "
            f"{metrics['epoch_seconds']:.1f}s  {metrics['images_per_second']:.0f} img/s"
        )

    def on_end(self, result: RunResult) -> None:
        if result.status not in ("completed", "early_stopped"):
            self._say(f"run {result.status}" + (f": {result.reason}" if result.reason else ""))
        keys = [k for k in result.summary if k.startswith(f"{result.eval_split}/")]
        if keys:
            shown = "  ".join(f"{k} {result.summary[k]:.4f}" for k in keys)
            self._say(f"{result.eval_split} metrics: {shown}")
        if result.best_value is not None:
            self._say(f"best {result.monitor} {result.best_value:.4f} at epoch {result.best_epoch}")
        self._say(f"saved to {result.run_dir}")
