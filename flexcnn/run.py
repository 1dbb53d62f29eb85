"""``run(config)``: the single entrypoint that trains and evaluates one model.

prepare (data, model, optimiser; resumed from last.pt) -> fit (each epoch: train,
validate, record, checkpoint, report) -> finish (test metrics of the best
weights, summary) -> RunResult. The loop imports no wandb, optuna or click;
those sit behind reporters and the CLI.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from flexcnn.checkpoint import Checkpoint, save_checkpoint
from flexcnn.config import RunConfig, validate_config
from flexcnn.errors import CheckpointError, OutOfMemory, RunFailed, StorageFull
from flexcnn.finish import final_evaluation, summarize
from flexcnn.hardware import Hardware, resolve_hardware
from flexcnn.losses import make_loss
from flexcnn.models import ModelAdapter
from flexcnn.pipeline import build_pipeline
from flexcnn.reporters.base import Reporter, RunInfo, RunResult, StopRun
from flexcnn.reporters.broadcast import Broadcast
from flexcnn.reporters.files import FilesReporter, read_metrics
from flexcnn.run_folder import check_output_dir, claim_run_dir, clear_stale_temps
from flexcnn.signals import interrupts_deferred
from flexcnn.training import Training, class_weights, make_train_loader

log = logging.getLogger(__name__)


@dataclass
class Ending:
    """How the epoch loop ended; ``failure``, when set, is raised once the reporters have the result."""

    status: str = "completed"
    reason: str = ""
    failure: RunFailed | None = None


def run(
    config: RunConfig | dict[str, Any],
    reporters: Sequence[Reporter] = (),
    *,
    run_dir: Path | str | None = None,
    resume: bool = False,
) -> RunResult:
    """Train and evaluate one model as ``config`` says; return its metrics.

    Writes the run folder (config.yaml, metrics.jsonl, summary.json, best.pt,
    last.pt, confusion.png) through a ``FilesReporter``, added unless a reporter
    given keeps the record. ``resume=True`` continues from ``run_dir/last.pt``.
    A reporter may stop the run by raising ``StopRun`` (status pruned). A run
    that cannot go on (NaN loss, out of memory, a full disk) is recorded as
    failed, then ``RunFailed`` (``TrainingDiverged``, ``OutOfMemory``,
    ``StorageFull``) is raised.
    """
    if not isinstance(config, RunConfig):
        config = validate_config(config)
    started = time.perf_counter()
    hw = resolve_hardware(config.train)
    torch.manual_seed(config.train.seed)
    if resume and run_dir is None:
        raise CheckpointError("cannot resume: name the run folder to continue (--resume RUN_DIR)")
    if run_dir is None:
        # Fail fast on an unwritable output_dir, but claim the run folder only once data and
        # model are built: a data or config mistake must not leave an empty run folder behind.
        check_output_dir(Path(config.logging.output_dir))
    resume_from = _resume_checkpoint(Path(run_dir), config) if resume and run_dir is not None else None

    training = prepare(config, hw, resume_from)
    out = claim_run_dir(run_dir, config)
    # On resume, the history is the record's rows up to the checkpoint (a kill may have left one more).
    history = [row for row in read_metrics(out) if row["epoch"] <= training.start_epoch] if resume_from else []
    sinks = Broadcast(_with_record(reporters))
    info = _run_info(training, out, history)
    sinks.on_start(info)

    ending = fit(training, sinks, out, history)
    result = finish(training, ending, info, history, started)
    unwritten = sinks.on_end(result)
    failure = ending.failure
    if failure is None and unwritten is not None:  # a full disk at the very end must not pass for success
        failure = StorageFull(f"cannot write to the run folder {out}: {unwritten.strerror or unwritten}")
    if failure is not None:
        raise failure
    return result


def prepare(config: RunConfig, hw: Hardware, resume_from: Checkpoint | None) -> Training:
    """Data, model, loaders, loss and optimiser for ``config``, restored from ``resume_from`` when given."""
    pipe = build_pipeline(config, hw.device, hw.channels_last)
    _warn_if_never_unfrozen(pipe.adapter, config.train.epochs)
    module = pipe.adapter.module.to(hw.device)
    if hw.channels_last:
        module = module.to(memory_format=torch.channels_last)
    net = torch.compile(module, mode=config.train.compile) if config.train.compile != "off" else module

    loader_gen = torch.Generator().manual_seed(config.train.seed)
    augment_gen = torch.Generator(device=hw.device).manual_seed(config.train.seed + 1)
    weighting = config.data.class_weighting
    weights = class_weights(pipe.splits) if weighting != "none" else None
    training = Training(
        config,
        hw,
        pipe,
        module,
        net,
        train_loader=make_train_loader(pipe.splits, config.data, hw.device, loader_gen, weights),
        loss_fn=make_loss(config.train, weights.to(hw.device) if weighting == "loss" and weights is not None else None),
        loader_gen=loader_gen,
        augment_gen=augment_gen,
        scaler=torch.amp.GradScaler("cuda") if hw.needs_scaler else None,
    )
    if resume_from is not None:
        training.resume(resume_from)
    else:
        training.new_optimizer(0)
    return training


def fit(training: Training, sinks: Broadcast, run_dir: Path, history: list[dict[str, float]]) -> Ending:
    """The epoch loop: train, validate, record, checkpoint, report; until done, stopped or failed."""
    epoch = training.start_epoch
    try:
        for epoch in range(training.start_epoch, training.epochs):
            training.begin_epoch(epoch)
            sinks.on_epoch_start(epoch, training.batches_per_epoch)
            metrics = training.train_epoch(epoch, sinks.on_batch)
            # The record before last.pt, the others after it (see Reporter): a StopRun waits for both.
            # A SIGTERM waits for all three, so last.pt and the W&B history a resume continues hold the same epochs.
            with interrupts_deferred():
                history.append({"epoch": epoch + 1, **metrics})
                stopped = sinks.record_epoch(epoch, metrics)
                _save_checkpoints(training, run_dir, epoch, metrics)
                stopped = sinks.report_epoch(epoch, metrics) or stopped
            if stopped is not None:
                return Ending(stopped.status, stopped.reason)
            if training.tracker.should_stop:
                monitor, bad = training.config.train.monitor, training.tracker.bad_epochs
                return Ending("early_stopped", f"no improvement in {monitor} for {bad} epochs")
    except StopRun as stop:
        return Ending(stop.status, stop.reason)
    except KeyboardInterrupt:
        return Ending("interrupted", "stopped by Ctrl-C / SIGINT; resume with --resume")
    except torch.OutOfMemoryError as exc:
        batch_size = training.config.data.batch_size
        return _failed(
            OutOfMemory(
                f"out of memory in epoch {epoch + 1} at data.batch_size={batch_size}: lower data.batch_size "
                f"or data.image_size, or use train.amp=bf16 ({str(exc).splitlines()[0]})"
            )
        )
    except OSError as exc:
        return _failed(StorageFull(f"cannot write to the run folder {run_dir}: {exc.strerror or exc}"))
    except RunFailed as exc:
        return _failed(exc)
    return Ending()


def finish(
    training: Training, ending: Ending, info: RunInfo, history: list[dict[str, float]], started: float
) -> RunResult:
    """The result: test metrics of the best weights when the run ended well, and the summary."""
    best = info.run_dir / "best.pt"
    result = RunResult(
        status=ending.status,
        run_dir=info.run_dir,
        summary={},
        history=history,
        classes=info.classes,
        monitor=training.config.train.monitor,
        best_value=training.tracker.best,
        best_epoch=training.tracker.best_epoch,
        reason=ending.reason,
        checkpoint=best if best.is_file() else None,
    )
    if result.ok and result.checkpoint is not None:
        final_evaluation(result, training)
    result.summary.update(summarize(result, info, time.perf_counter() - started))
    return result


def _failed(failure: RunFailed) -> Ending:
    return Ending("failed", str(failure), failure)


def _save_checkpoints(training: Training, run_dir: Path, epoch: int, metrics: dict[str, float]) -> None:
    """best.pt when the monitored metric improved, and last.pt (resumable) after every epoch."""
    if training.tracker.update(metrics[training.config.train.monitor], epoch + 1):
        save_checkpoint(run_dir / "best.pt", training.checkpoint(epoch + 1, metrics=metrics).to_dict())
    save_checkpoint(run_dir / "last.pt", training.checkpoint(epoch + 1, resumable=True).to_dict())


def _with_record(reporters: Sequence[Reporter]) -> list[Reporter]:
    """``reporters``, plus a FilesReporter (the run folder) unless one of them keeps the run's record."""
    if any(reporter.keeps_record for reporter in reporters):
        return list(reporters)
    return [FilesReporter(), *reporters]


def _run_info(training: Training, run_dir: Path, history: list[dict[str, float]]) -> RunInfo:
    splits = training.pipe.splits
    return RunInfo(
        config=training.config,
        run_dir=run_dir,
        classes=splits.classes,
        parameter_counts=training.adapter.parameter_counts(),
        device=training.hw.describe(),
        train_size=len(splits.train),
        val_size=len(splits.val),
        test_size=len(splits.test) if splits.test is not None else 0,
        start_epoch=training.start_epoch,
        history=list(history),
    )


def _resume_checkpoint(run_dir: Path, config: RunConfig) -> Checkpoint:
    """``run_dir/last.pt``, checked to be resumable with ``config``."""
    path = run_dir / "last.pt"
    clear_stale_temps(run_dir)  # a SIGKILL in the middle of an atomic write leaves its temporary file
    if not path.is_file():
        raise CheckpointError(f"cannot resume: {path} does not exist (is {run_dir} a flexcnn run folder?)")
    checkpoint = Checkpoint.load(path)
    if checkpoint.config.get("model") != config.to_dict()["model"]:
        raise CheckpointError(f"cannot resume {run_dir}: its checkpoint is from a different model config")
    if checkpoint.resume is None:
        raise CheckpointError(f"cannot resume {run_dir}: {path} holds no optimiser state")
    return checkpoint


def _warn_if_never_unfrozen(adapter: ModelAdapter, epochs: int) -> None:
    switch = adapter.phase_switch_epoch
    if switch is not None and switch >= epochs:
        log.warning(
            "model.head_epochs=%d is not below train.epochs=%d: the backbone is never unfrozen, "
            "so this two_phase run trains the head only (feature extraction)",
            switch,
            epochs,
        )
