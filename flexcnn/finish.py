"""What a run ends with: the final evaluation of its best weights, sample predictions, latency and the summary."""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from flexcnn.checkpoint import Checkpoint
from flexcnn.data.base import ImageTensors, Split
from flexcnn.engine import autocast
from flexcnn.metrics import classification_report
from flexcnn.reporters.base import RunInfo, RunResult, SamplePredictions
from flexcnn.training import Training

# Latency: a fixed batch, so a sweep over data.batch_size does not move it; a few untimed passes
# first (allocator, cuDNN autotuning, a compiled graph), then the median of the timed ones.
LATENCY_BATCH = 32
LATENCY_WARMUP = 2
LATENCY_REPEATS = 5


def final_evaluation(result: RunResult, training: Training) -> None:
    """Reload the best weights and evaluate on test (val when the source has no test split) into ``result``."""
    assert result.checkpoint is not None
    training.module.load_state_dict(Checkpoint.load(result.checkpoint, training.hw.device).model)
    splits = training.pipe.splits
    split_name = "test" if splits.test is not None else "val"
    split = splits.test if splits.test is not None else splits.val
    out = training.evaluate(training.eval_loader(split))
    report = classification_report(out.probs, out.targets, out.loss, splits.classes)
    result.eval_split, result.report, result.probs, result.targets = split_name, report, out.probs, out.targets
    result.summary.update(report.scalars(split_name))
    for name, row in report.per_class.items():
        result.summary[f"{split_name}/acc/{name}"] = row["acc"]
    result.samples = _samples(split, out.probs, out.targets, training.config.logging.wandb.num_samples)
    result.summary.update(measure_latency(training, split))


@torch.no_grad()
def measure_latency(training: Training, split: Split) -> dict[str, Any]:
    """Milliseconds per image of the model's forward pass: eval mode, the run's device, precision and layout.

    One batch of up to ``LATENCY_BATCH`` images of ``split``, prepared as for evaluation (the
    preprocessing is not timed), ``LATENCY_WARMUP`` untimed passes, then the median of
    ``LATENCY_REPEATS`` timed ones (with a device sync), divided by the batch size.
    """
    n = min(LATENCY_BATCH, len(split))
    if n == 0:
        return {}
    index = torch.arange(n)
    images = split.images[index] if isinstance(split, ImageTensors) else torch.stack([split[i][0] for i in range(n)])
    hw = training.hw
    x = training.pipe.transform(images, train=False)
    net = training.net.eval()
    times = []
    with autocast(hw.device, hw.amp_dtype):
        for i in range(LATENCY_WARMUP + LATENCY_REPEATS):
            started = time.perf_counter()
            net(x)
            _sync(hw.device)
            if i >= LATENCY_WARMUP:
                times.append(time.perf_counter() - started)
    return {"latency_ms_per_image": statistics.median(times) * 1000.0 / n, "latency_batch": n}


def _sync(device: torch.device) -> None:
    """Wait for the device: CUDA and MPS run kernels asynchronously, so a timer alone sees only the launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _samples(split: Split, probs: torch.Tensor, targets: torch.Tensor, n: int) -> SamplePredictions | None:
    """Up to ``n`` evaluated images, the mistakes first (half at most), in split order."""
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


def summarize(result: RunResult, info: RunInfo, seconds: float) -> dict[str, Any]:
    """The run's summary: status, best and last epochs' metrics, time, device and parameter counts."""
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
