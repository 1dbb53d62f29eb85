"""Training throughput of ResNet50 and VGG19 under each fine-tuning strategy (224 px, batch 16).

One step is forward + backward + SGD step on random images, through the same
adapter run() uses (frozen layers in eval mode, only trainable parameters in
the optimiser). The baseline is a hand-written loop that fine-tunes the plain
torchvision model fully, so a strategy's ratio is its speed-up over full
fine-tuning and ``full``'s ratio is the adapter's overhead (aim ~1x).
``two_phase`` runs at ``feature_extraction`` speed for its head epochs, then at
``partial`` speed.

On CPU each figure is the fastest of up to ``CPU_STEPS`` timed steps after one
warm-up step (timing stops after ``CPU_SECONDS``), which keeps the module at a
few minutes on 2 cores and filters out slow-downs from other processes.
On a CPU with native bf16 (AVX512-BF16/AMX), full fine-tuning is also
measured with bf16 autocast (``train.amp=bf16``, opt-in on CPU).
Where a CUDA GPU is available, every strategy is also measured with bf16
autocast + channels_last against fp32, and ResNet50 full fine-tuning at batch
256 against the published single-H100 figure.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bench.common import Row
from flexcnn.hardware import native_bf16
from flexcnn.models import InputSpec, build_model
from flexcnn.models.pretrained import PretrainedConfig

KINDS = ("resnet50", "vgg19")
STRATEGIES = ("feature_extraction", "partial", "full")
SIZE, BATCH, CLASSES = 224, 16, 100
CPU_STEPS, CPU_SECONDS = 3, 8.0
GPU_WARMUP, GPU_STEPS = 10, 30
BIG_BATCH = 256
# NVIDIA's published ResNet50 training throughput on one H100 (synthetic data, mixed precision, batch 256):
# about 2,600-2,800 images/s; the middle of that range is the reference.
PUBLISHED_H100_RESNET50 = 2700.0


@dataclass
class Trainable:
    """A module, its optimiser parameter groups and how to put it in training mode."""

    module: nn.Module
    groups: list[dict[str, Any]]
    train_mode: Callable[[], None]


def with_strategy(kind: str, strategy: str) -> Trainable:
    """The model as run() builds it (random weights; weights do not change the speed)."""
    cfg = PretrainedConfig(kind=kind, weights="none", strategy=strategy, unfreeze_stages=1, image_size=SIZE)
    adapter = build_model(cfg, InputSpec(3, SIZE, CLASSES))
    return Trainable(adapter.module, adapter.param_groups(0.01), adapter.train_mode)


def plain(kind: str) -> Trainable:
    """The baseline: torchvision's model with a new classifier, every parameter trained."""
    import torchvision

    model = torchvision.models.get_model(kind, num_classes=CLASSES)
    return Trainable(model, [{"params": list(model.parameters())}], model.train)


def images_per_second(
    net: Trainable,
    device: torch.device,
    *,
    batch: int = BATCH,
    amp: torch.dtype | None = None,
    channels_last: bool = False,
    warmup: int = 1,
    steps: int = CPU_STEPS,
    max_seconds: float = float("inf"),
) -> float:
    """Training images per second over timed steps after ``warmup`` steps."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    module = net.module.to(device, memory_format=memory_format)
    groups = [g for g in net.groups if g["params"]]
    opt = torch.optim.SGD(groups, lr=0.01, momentum=0.9)
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch, 3, SIZE, SIZE, device=device, generator=gen).contiguous(memory_format=memory_format)
    y = torch.randint(0, CLASSES, (batch,), device=device, generator=gen)
    cuda = device.type == "cuda"

    def step() -> None:
        net.train_mode()
        ctx = torch.autocast(device.type, dtype=amp) if amp is not None else contextlib.nullcontext()
        with ctx:
            loss = nn.functional.cross_entropy(module(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    if cuda:
        # Queued GPU work: time the whole run, synchronising only at its ends.
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        torch.cuda.synchronize(device)
        seconds = (time.perf_counter() - start) / steps
    else:
        # On a shared CPU other processes only ever slow a step down: the fastest step is the figure.
        times: list[float] = []
        while len(times) < steps and sum(times) < max_seconds:
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        seconds = min(times)
    module.to("cpu")
    return batch / seconds


def cpu_rows() -> list[Row]:
    cpu = torch.device("cpu")
    rows = []
    for kind in KINDS:
        _progress(f"{kind} cpu: plain full fine-tuning baseline")
        baseline = images_per_second(plain(kind), cpu, max_seconds=CPU_SECONDS)
        for strategy in STRATEGIES:
            _progress(f"{kind} cpu: {strategy}")
            value = images_per_second(with_strategy(kind, strategy), cpu, max_seconds=CPU_SECONDS)
            rows.append(
                Row(
                    f"{kind} cpu {strategy} img/s",
                    value,
                    baseline,
                    "i/s",
                    "plain torchvision full fine-tuning loop",
                    aim="~1x" if strategy == "full" else ">1x",
                )
            )
        if native_bf16(cpu):  # what train.amp=bf16 (opt-in on CPU) gives the full fine-tune here
            _progress(f"{kind} cpu: full, bf16 autocast")
            fast = images_per_second(with_strategy(kind, "full"), cpu, amp=torch.bfloat16, max_seconds=CPU_SECONDS)
            rows.append(Row(f"{kind} cpu full bf16 img/s", fast, baseline, "i/s", "same, fp32", aim=">1x"))
    return rows


def gpu_rows() -> list[Row]:
    gpu = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    timing = {"warmup": GPU_WARMUP, "steps": GPU_STEPS}
    rows = []
    for kind in KINDS:
        for strategy in STRATEGIES:
            _progress(f"{kind} cuda: {strategy}")
            fp32 = images_per_second(with_strategy(kind, strategy), gpu, **timing)
            fast = images_per_second(
                with_strategy(kind, strategy), gpu, amp=torch.bfloat16, channels_last=True, **timing
            )
            rows.append(Row(f"{kind} cuda {strategy} bf16+cl img/s", fast, fp32, "i/s", "fp32, same step", aim=">1x"))
    _progress(f"resnet50 cuda: full, batch {BIG_BATCH}")
    big = {"batch": BIG_BATCH, "warmup": GPU_WARMUP, "steps": GPU_STEPS}
    fp32 = images_per_second(with_strategy("resnet50", "full"), gpu, **big)
    fast = images_per_second(with_strategy("resnet50", "full"), gpu, amp=torch.bfloat16, channels_last=True, **big)
    rows.append(Row(f"resnet50 cuda full bf16+cl bs{BIG_BATCH} img/s", fast, fp32, "i/s", "fp32, same step", aim=">1x"))
    rows.append(
        Row(
            f"resnet50 cuda full bf16+cl bs{BIG_BATCH} vs published",
            fast,
            PUBLISHED_H100_RESNET50,
            "i/s",
            "published H100 ResNet50 (fp16, synthetic)",
            aim="~1x on H100",
        )
    )
    return rows


def _progress(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


def run() -> list[Row]:
    rows = cpu_rows()
    if torch.cuda.is_available():
        rows += gpu_rows()
    return rows
