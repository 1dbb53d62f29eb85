"""``run(config)``: the single entrypoint that trains and evaluates one model.

config -> data + model -> epochs (train, validate, checkpoint, report) ->
test metrics -> RunResult. The loop imports no wandb, optuna or click; those
sit behind reporters and the CLI.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from flexcnn.checkpoint import load_checkpoint, save_checkpoint
from flexcnn.config import RunConfig, validate_config
from flexcnn.data import DataSplits, Target, load_splits
from flexcnn.data.augment import BatchTransform
from flexcnn.data.base import ImageTensors, Split
from flexcnn.data.loaders import make_loader
from flexcnn.data.stats import channel_stats
from flexcnn.engine import evaluate, train_one_epoch
from flexcnn.errors import CheckpointError, OutOfMemory, RunFailed, StorageFull, TrainingDiverged, UserError
from flexcnn.hardware import Hardware, resolve_hardware
from flexcnn.imagenet import IMAGENET_MEAN, IMAGENET_STD
from flexcnn.losses import make_loss
from flexcnn.metrics import classification_report, macro_f1
from flexcnn.models import InputSpec, ModelAdapter, build_model, input_request
from flexcnn.optim import Schedule, make_optimizer
from flexcnn.reporters.base import (
    BaseReporter,
    Reporter,
    RunInfo,
    RunResult,
    SamplePredictions,
    StopRun,
)
from flexcnn.reporters.files import FilesReporter

log = logging.getLogger(__name__)


@dataclass
class Pipeline:
    """Everything run() builds before the first epoch."""

    splits: DataSplits
    spec: InputSpec
    mean: tuple[float, ...]
    std: tuple[float, ...]
    adapter: ModelAdapter
    transform: BatchTransform


class EarlyStopping:
    """Tracks the best monitored value and the epochs since it improved."""

    def __init__(self, mode: str, patience: int | None) -> None:
        self.mode, self.patience = mode, patience
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.bad_epochs = 0

    def update(self, value: float, epoch: int) -> bool:
        better = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
        if better:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.bad_epochs = state["best"], state["best_epoch"], state["bad_epochs"]


def new_run_dir(config: RunConfig) -> Path:
    """Claim a fresh folder under logging.output_dir named after the run.

    ``mkdir`` without ``exist_ok`` is the claim, so agents starting in the same
    second never share a folder; a W&B sweep run's id makes the name unique too.
    """
    root = Path(config.logging.output_dir)
    stamp = os.environ.get("WANDB_RUN_ID") or f"{datetime.now():%Y%m%d-%H%M%S}"
    name = config.logging.run_name or f"{config.model.kind.replace(':', '-')}-{config.data.source}-{stamp}"
    for n in range(1, 10_000):
        path = root / (name if n == 1 else f"{name}-{n}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
        except OSError as exc:
            raise UserError(
                f"cannot create the run folder {path} ({exc.strerror or exc}); "
                "choose another with --output-dir or logging.output_dir"
            ) from None
    raise UserError(f"too many runs named {name!r} under {root}; set logging.run_name")


def build_pipeline(config: RunConfig, device: torch.device, channels_last: bool = False) -> Pipeline:
    """Load data and build the model and batch transform that fit each other."""
    request = input_request(config.model)
    channels = config.data.channels or request.channels
    size = config.data.image_size or request.image_size
    splits = load_splits(config.data, Target(channels=channels, image_size=size))
    channels = channels or splits.channels
    size = size or splits.image_size
    if config.data.mean is not None and config.data.std is not None:
        mean, std = tuple(config.data.mean), tuple(config.data.std)
        if len(mean) != channels:
            from flexcnn.errors import ConfigError

            raise ConfigError(f"data.mean has {len(mean)} values; the model's input has {channels} channel(s)")
    elif config.data.normalize == "none":
        mean, std = (0.0,) * channels, (1.0,) * channels
    elif config.data.normalize == "imagenet" or request.mean is not None:
        mean = request.mean or IMAGENET_MEAN
        std = request.std or IMAGENET_STD
        if channels == 1:
            mean, std = (sum(mean) / 3,), (sum(std) / 3,)
    else:
        mean, std = channel_stats(splits.train, channels)
    spec = InputSpec(channels=channels, image_size=size, num_classes=splits.num_classes)
    adapter = build_model(config.model, spec)
    transform = BatchTransform(
        in_channels=splits.channels,
        out_channels=channels,
        in_size=splits.image_size,
        out_size=size,
        mean=mean,
        std=std,
        preset=config.data.augment,
        hflip=config.data.hflip,
        channels_last=channels_last,
        device=device,
    )
    return Pipeline(splits, spec, mean, std, adapter, transform)


def _class_weights(splits: DataSplits) -> torch.Tensor:
    counts = torch.tensor(splits.class_counts("train"), dtype=torch.float32).clamp_min(1)
    return counts.sum() / (len(counts) * counts)


def run(
    config: RunConfig | dict[str, Any],
    reporters: Sequence[Reporter] = (),
    *,
    run_dir: Path | str | None = None,
    resume: bool = False,
) -> RunResult:
    """Train and evaluate one model as ``config`` says; return its metrics.

    Writes the run folder (config.yaml, metrics.jsonl, summary.json, best.pt,
    last.pt, confusion.png). ``resume=True`` continues from ``run_dir/last.pt``.
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
        _check_output_dir(Path(config.logging.output_dir))
    resume_state = _resume_state(Path(run_dir), config) if resume and run_dir is not None else None

    pipe = build_pipeline(config, hw.device, hw.channels_last)
    switch = pipe.adapter.phase_switch_epoch
    if switch is not None and switch >= config.train.epochs:
        log.warning(
            "model.head_epochs=%d is not below train.epochs=%d: the backbone is never unfrozen, "
            "so this two_phase run trains the head only (feature extraction)",
            switch,
            config.train.epochs,
        )
    module = pipe.adapter.module.to(hw.device)
    if hw.channels_last:
        module = module.to(memory_format=torch.channels_last)
    net = torch.compile(module, mode=config.train.compile) if config.train.compile != "off" else module

    loader_gen = torch.Generator().manual_seed(config.train.seed)
    augment_gen = torch.Generator(device=hw.device).manual_seed(config.train.seed + 1)
    splits, data_cfg = pipe.splits, config.data
    weights = _class_weights(splits) if data_cfg.class_weighting != "none" else None
    resident = data_cfg.resident != "never"
    train_loader = make_loader(
        splits.train,
        batch_size=data_cfg.batch_size,
        device=hw.device,
        train=True,
        resident=resident,
        generator=loader_gen,
        num_workers=data_cfg.num_workers,
        weights=weights[splits.train.targets]
        if data_cfg.class_weighting == "sampler" and weights is not None
        else None,
    )
    eval_bs = data_cfg.eval_batch_size or max(data_cfg.batch_size, 256)

    def eval_loader(split: Split) -> Any:
        return make_loader(
            split,
            batch_size=eval_bs,
            device=hw.device,
            train=False,
            resident=resident,
            num_workers=data_cfg.num_workers,
        )

    val_loader = eval_loader(splits.val)
    loss_fn = make_loss(
        config.train, weights.to(hw.device) if data_cfg.class_weighting == "loss" and weights is not None else None
    )
    eval_loss = torch.nn.CrossEntropyLoss()  # plain CE, so val/loss compares across configs
    epochs = config.train.epochs

    def new_optimizer(from_epoch: int) -> tuple[torch.optim.Optimizer, Schedule]:
        opt = make_optimizer(config.optim, pipe.adapter.param_groups(config.optim.lr))
        sched = Schedule(
            config.optim,
            opt,
            epochs=epochs - from_epoch,
            steps_per_epoch=len(train_loader),
            mode=config.train.monitor_mode,
        )
        return opt, sched

    start_epoch = 0
    tracker = EarlyStopping(config.train.monitor_mode, config.train.early_stopping)
    if resume_state is not None:
        start_epoch = int(resume_state["epoch"])
        pipe.adapter.on_epoch_start(start_epoch - 1)  # re-apply any phase switch already passed
        module.load_state_dict(resume_state["model"])
    optimizer, schedule = new_optimizer(_phase_start(pipe.adapter, start_epoch))
    scaler = torch.amp.GradScaler("cuda") if hw.needs_scaler else None
    if resume_state is not None:
        optimizer.load_state_dict(resume_state["optimizer"])
        schedule.load_state_dict(resume_state["schedule"])
        tracker.load_state_dict(resume_state["early_stopping"])
        _restore_rng(resume_state["rng"], loader_gen, augment_gen, hw)
        if scaler is not None and resume_state.get("scaler"):
            scaler.load_state_dict(resume_state["scaler"])

    out = Path(run_dir) if run_dir is not None else new_run_dir(config)
    last_path, best_path = out / "last.pt", out / "best.pt"
    _ensure_writable(out)
    files = FilesReporter(out)
    sinks: list[Reporter] = [files, *reporters]
    info = RunInfo(
        config=config,
        run_dir=out,
        classes=splits.classes,
        parameter_counts=pipe.adapter.parameter_counts(),
        device=hw.describe(),
        train_size=len(splits.train),
        val_size=len(splits.val),
        test_size=len(splits.test) if splits.test is not None else 0,
        start_epoch=start_epoch,
    )
    for sink in sinks:
        sink.on_start(info)

    def checkpoint_state(epoch: int) -> dict[str, Any]:
        return {
            "model": module.state_dict(),
            "epoch": epoch,
            "config": config.to_dict(),
            "classes": splits.classes,
            "input": {
                "channels": pipe.spec.channels,
                "image_size": pipe.spec.image_size,
                "mean": list(pipe.mean),
                "std": list(pipe.std),
                "source_channels": splits.channels,
                "source_size": splits.image_size,
            },
        }

    status, reason, epoch = "completed", "", start_epoch
    failure: RunFailed | None = None
    try:
        for epoch in range(start_epoch, epochs):
            if pipe.adapter.on_epoch_start(epoch):
                optimizer, schedule = new_optimizer(epoch)
            for sink in sinks:
                if isinstance(sink, BaseReporter):
                    sink.on_epoch_start(epoch, len(train_loader))
            pipe.adapter.train_mode()
            stats = train_one_epoch(
                net,
                train_loader,
                lambda images: pipe.transform(images, train=True, generator=augment_gen),
                optimizer,
                loss_fn,
                device=hw.device,
                amp_dtype=hw.amp_dtype,
                scaler=scaler,
                grad_clip=config.train.grad_clip,
                step_scheduler=schedule.step_batch,
                epoch=epoch,
                on_batch=lambda n: [s.on_batch(n) for s in sinks if isinstance(s, BaseReporter)],
            )
            val = evaluate(
                net,
                val_loader,
                lambda images: pipe.transform(images, train=False),
                eval_loss,
                device=hw.device,
                amp_dtype=hw.amp_dtype,
            )
            metrics = {
                "epoch": epoch + 1,
                "train/loss": stats.loss,
                "train/acc": stats.acc,
                "val/loss": val.loss,
                "val/acc": val.acc,
                # Only F1 each epoch; confusion, AUROC and per-class tables are for the final evaluation.
                "val/f1_macro": macro_f1(val.probs, val.targets, splits.num_classes),
                "lr": schedule.lr(),
                "epoch_seconds": stats.seconds,
                "images_per_second": stats.images_per_second,
            }
            monitored = metrics[config.train.monitor]
            if not math.isfinite(val.loss):
                raise TrainingDiverged(f"validation loss became {val.loss} in epoch {epoch + 1}")
            schedule.step_epoch(monitored)
            # metrics.jsonl before last.pt: a kill between the two then re-runs this epoch on resume,
            # where the other order left a hole in metrics.jsonl (last.pt past the rows it kept).
            files.on_epoch(epoch, metrics)
            if tracker.update(monitored, epoch + 1):
                save_checkpoint(best_path, {**checkpoint_state(epoch + 1), "metrics": metrics})
            save_checkpoint(
                last_path,
                {
                    **checkpoint_state(epoch + 1),
                    "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(),
                    "early_stopping": tracker.state_dict(),
                    "scaler": scaler.state_dict() if scaler else {},
                    "rng": _rng_state(loader_gen, augment_gen, hw),
                },
            )
            _report_epoch(reporters, epoch, metrics)
            if tracker.should_stop:
                status, reason = (
                    "early_stopped",
                    (f"no improvement in {config.train.monitor} for {tracker.bad_epochs} epochs"),
                )
                break
    except StopRun as stop:
        status, reason = stop.status, stop.reason
    except KeyboardInterrupt:
        status, reason = "interrupted", "stopped by Ctrl-C / SIGINT; resume with --resume"
    except torch.OutOfMemoryError as exc:
        failure = OutOfMemory(
            f"out of memory in epoch {epoch + 1} at data.batch_size={data_cfg.batch_size}: lower data.batch_size "
            f"or data.image_size, or use train.amp=bf16 ({str(exc).splitlines()[0]})"
        )
        status, reason = "failed", str(failure)
    except OSError as exc:
        failure = StorageFull(f"cannot write to the run folder {out}: {exc.strerror or exc}")
        status, reason = "failed", str(failure)
    except RunFailed as exc:
        status, reason, failure = "failed", str(exc), exc

    result = RunResult(
        status=status,
        run_dir=out,
        summary={},
        history=list(files.history),
        classes=splits.classes,
        monitor=config.train.monitor,
        best_value=tracker.best,
        best_epoch=tracker.best_epoch,
        reason=reason,
        checkpoint=best_path if best_path.is_file() else None,
    )
    if result.ok and result.checkpoint is not None:
        _final_evaluation(result, pipe, module, net, hw, eval_loss, eval_loader, config)
    result.summary.update(_summary(result, info, time.perf_counter() - started))
    for sink in sinks:
        try:
            sink.on_end(result)
        except OSError as exc:
            if failure is None:  # a full disk at the very end must not pass for success
                failure = StorageFull(f"cannot write to the run folder {out}: {exc.strerror or exc}")
            log.warning("%s could not finish: %s", type(sink).__name__, exc)
    if failure is not None:
        raise failure
    return result


def _report_epoch(sinks: Sequence[Reporter], epoch: int, metrics: dict[str, float]) -> None:
    """Tell every reporter; a StopRun from one (pruning) is raised after all have seen the epoch."""
    stop: StopRun | None = None
    for sink in sinks:
        try:
            sink.on_epoch(epoch, metrics)
        except StopRun as exc:
            stop = stop or exc
    if stop is not None:
        raise stop


def _final_evaluation(
    result: RunResult,
    pipe: Pipeline,
    module: torch.nn.Module,
    net: Any,
    hw: Hardware,
    eval_loss: torch.nn.Module,
    eval_loader: Any,
    config: RunConfig,
) -> None:
    """Reload the best weights and evaluate on test (val when the source has no test split)."""
    assert result.checkpoint is not None
    module.load_state_dict(load_checkpoint(result.checkpoint, hw.device)["model"])
    split_name = "test" if pipe.splits.test is not None else "val"
    split = pipe.splits.test if pipe.splits.test is not None else pipe.splits.val
    out = evaluate(
        net,
        eval_loader(split),
        lambda images: pipe.transform(images, train=False),
        eval_loss,
        device=hw.device,
        amp_dtype=hw.amp_dtype,
    )
    report = classification_report(out.probs, out.targets, out.loss, pipe.splits.classes)
    result.eval_split, result.report, result.probs, result.targets = split_name, report, out.probs, out.targets
    result.summary.update(report.scalars(split_name))
    for name, row in report.per_class.items():
        result.summary[f"{split_name}/acc/{name}"] = row["acc"]
    result.samples = _samples(split, out.probs, out.targets, config.logging.wandb.num_samples)


def _samples(split: Split, probs: torch.Tensor, targets: torch.Tensor, n: int) -> SamplePredictions | None:
    if n <= 0 or len(targets) == 0:
        return None
    preds = probs.argmax(dim=1)
    wrong = (preds != targets).nonzero().flatten()[: n // 2]
    right = (preds == targets).nonzero().flatten()[: n - len(wrong)]
    index = torch.cat([wrong, right]).sort().values
    if isinstance(split, ImageTensors):
        images = split.images[index]
    else:
        images = torch.stack([split[int(i)][0] for i in index])
    return SamplePredictions(
        images=images.cpu(),
        targets=targets[index].tolist(),
        predictions=preds[index].tolist(),
        confidences=probs[index, preds[index]].tolist(),
    )


def _summary(result: RunResult, info: RunInfo, seconds: float) -> dict[str, Any]:
    last = result.history[-1] if result.history else {}
    summary: dict[str, Any] = {
        "status": result.status,
        "epochs_completed": int(last.get("epoch", 0)),
        "best_epoch": result.best_epoch,
        f"best/{result.monitor}": result.best_value,
        "seconds": round(seconds, 3),
        "device": info.device,  # with the precision and layout it ran in: results differ slightly between them
        **info.parameter_counts,
    }
    if result.reason:
        summary["reason"] = result.reason
    for key in ("train/loss", "train/acc", "val/loss", "val/acc", "val/f1_macro"):
        if key in last:
            summary[f"last/{key}"] = last[key]
    if result.history:
        accs = [row["val/acc"] for row in result.history]
        losses = [row["val/loss"] for row in result.history]
        summary["best/val/acc"] = max(accs)
        summary["best/val/loss"] = min(losses)
    return summary


def _phase_start(adapter: ModelAdapter, epoch: int) -> int:
    """The epoch at which the current optimiser was (re)built, for schedule length."""
    start = 0
    for e in range(epoch):
        if adapter.phase_switch_epoch == e:
            start = e
    return start


def _rng_state(loader_gen: torch.Generator, augment_gen: torch.Generator, hw: Hardware) -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "loader": loader_gen.get_state(),
        "augment": augment_gen.get_state(),
    }
    if hw.device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(hw.device)
    return state


def _restore_rng(
    state: dict[str, Any], loader_gen: torch.Generator, augment_gen: torch.Generator, hw: Hardware
) -> None:
    torch.set_rng_state(state["torch"])
    loader_gen.set_state(state["loader"])
    augment_gen.set_state(state["augment"])
    if hw.device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], hw.device)


def _check_output_dir(root: Path) -> None:
    """Fail fast, creating nothing, when ``root`` (or the folder it would be made in) is not writable."""
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(
            f"cannot write the run folder under {root} ({existing} is not a writable folder); "
            "choose another with --output-dir or logging.output_dir"
        )


def _ensure_writable(run_dir: Path) -> None:
    """Fail before training, as a user mistake, when the run folder cannot be written."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(
            f"cannot write the run folder {run_dir} ({exc.strerror or exc}); "
            "choose another with --output-dir or logging.output_dir"
        ) from None


def _resume_state(run_dir: Path, config: RunConfig) -> dict[str, Any]:
    path = run_dir / "last.pt"
    # A SIGKILL in the middle of an atomic write leaves its temporary file; the target is intact.
    for stale in run_dir.glob(".*.tmp"):
        stale.unlink(missing_ok=True)
    if not path.is_file():
        raise CheckpointError(f"cannot resume: {path} does not exist (is {run_dir} a flexcnn run folder?)")
    state = load_checkpoint(path)
    if state.get("config", {}).get("model") != config.to_dict()["model"]:
        raise CheckpointError(f"cannot resume {run_dir}: its checkpoint is from a different model config")
    return state
