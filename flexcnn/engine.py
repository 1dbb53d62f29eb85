"""One training epoch and one evaluation pass. They return numbers and log nothing."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from flexcnn.errors import TrainingDiverged

Batches = Iterable[tuple[Tensor, Tensor]]
Prepare = Callable[[Tensor], Tensor]


@dataclass
class EpochStats:
    loss: float
    acc: float
    images: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


@dataclass
class EvalOutput:
    loss: float
    acc: float
    probs: Tensor  # (N, C) float on CPU
    targets: Tensor  # (N,) int64 on CPU


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[None]:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def train_one_epoch(
    model: nn.Module,
    batches: Batches,
    prepare: Prepare,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    *,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    grad_clip: float | None = None,
    step_scheduler: Callable[[], None] | None = None,
    epoch: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> EpochStats:
    """Train for one pass over ``batches``; raises TrainingDiverged on a non-finite loss."""
    start = time.perf_counter()
    # Sums stay on the device: one host sync per epoch, not per batch.
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    for images, labels in batches:
        x = prepare(images)
        with autocast(device, amp_dtype):
            logits = model(x)
            loss = loss_fn(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if grad_clip is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
        if step_scheduler is not None:
            step_scheduler()
        n = labels.shape[0]
        loss_sum += loss.detach().float() * n
        correct += (logits.detach().argmax(dim=1) == labels).sum()
        seen += n
        if on_batch is not None:
            on_batch(n)
    mean_loss = float(loss_sum) / max(seen, 1)
    if not math.isfinite(mean_loss):
        raise TrainingDiverged(
            f"training loss became {mean_loss} in epoch {epoch + 1}; lower optim.lr or set train.grad_clip"
        )
    return EpochStats(mean_loss, int(correct) / max(seen, 1), seen, time.perf_counter() - start)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Batches,
    prepare: Prepare,
    loss_fn: nn.Module,
    *,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
) -> EvalOutput:
    """Loss, accuracy and class probabilities over ``batches`` in eval mode."""
    model.eval()
    probs: list[Tensor] = []
    targets: list[Tensor] = []
    loss_sum = torch.zeros((), device=device)
    for images, labels in batches:
        with autocast(device, amp_dtype):
            logits = model(prepare(images))
        logits = logits.float()
        loss_sum += loss_fn(logits, labels) * labels.shape[0]
        probs.append(logits.softmax(dim=1))
        targets.append(labels)
    all_probs = torch.cat(probs).cpu()
    all_targets = torch.cat(targets).cpu()
    n = max(len(all_targets), 1)
    acc = float((all_probs.argmax(dim=1) == all_targets).float().mean()) if len(all_targets) else 0.0
    return EvalOutput(float(loss_sum) / n, acc, all_probs, all_targets)
