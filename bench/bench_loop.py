"""run()'s training throughput against a minimal hand-written PyTorch loop, and its fast paths against fp32.

Same model, batch size, data (mnist5k, resident, standard augmentation) and
epochs, in one process. Each side is timed per whole epoch after one
warm-up epoch, twice, alternating; the figure is the best epoch's training
images per second (the best of N, as ``timeit`` advises: on a shared machine
slower epochs measure the neighbours, not the loop).

- run() vs the minimal loop: both with the precision and memory layout
  run() resolves on this machine (``train.amp``/``train.channels_last``
  auto), so the ratio is run()'s own overhead: checkpoints, metrics,
  reporters.
- run() with ``train.amp=bf16`` vs run() in fp32: what bf16 autocast is worth
  here. It is the default on a recent GPU and opt-in on a CPU (see
  ``flexcnn/hardware.py`` for why), where AVX512-BF16/AMX make it pay.
"""

from __future__ import annotations

import tempfile
import time

import torch

from bench.common import Row
from flexcnn.config import load_config
from flexcnn.engine import autocast
from flexcnn.hardware import resolve_hardware
from flexcnn.pipeline import build_pipeline
from flexcnn.run import run as run_training

EPOCHS = 3
OVERRIDES = [
    "data.source=mnist5k",
    "data.augment=standard",
    "data.hflip=false",
    "data.batch_size=128",
    "model.num_filters=[32,64,128]",
    "optim.scheduler=none",
    "optim.name=adam",
    f"train.epochs={EPOCHS + 1}",
    "logging.progress=false",
    "logging.wandb.num_samples=0",
]


def minimal_loop_images_per_second() -> tuple[list[float], str]:
    """The plainest correct loop over the same pipeline: no checkpoints, no metrics, no reporters."""
    config = load_config(None, OVERRIDES)
    hw = resolve_hardware(config.train)
    torch.manual_seed(0)
    pipe = build_pipeline(config, hw.device, hw.channels_last)
    model = pipe.adapter.module.to(hw.device)
    if hw.channels_last:
        model = model.to(memory_format=torch.channels_last)
    images, labels = pipe.splits.train.images, pipe.splits.train.labels  # type: ignore[union-attr]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    bs = config.data.batch_size
    rates: list[float] = []
    for epoch in range(EPOCHS + 1):
        model.train()
        start = time.perf_counter()
        order = torch.randperm(len(labels))
        n = 0
        for b in range(len(labels) // bs):
            idx = order[b * bs : (b + 1) * bs]
            x = pipe.transform(images[idx], train=True)
            with autocast(hw.device, hw.amp_dtype):
                loss = loss_fn(model(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += bs
        if epoch > 0:  # epoch 0 warms up allocators and caches
            rates.append(n / (time.perf_counter() - start))
    return rates, hw.describe()


def run_images_per_second(*extra: str) -> list[float]:
    """run()'s training images per second of each epoch after the first (as its history records them)."""
    with tempfile.TemporaryDirectory() as tmp:
        result = run_training(load_config(None, [*OVERRIDES, *extra]), run_dir=tmp)
    return [r["images_per_second"] for r in result.history[1:]]


FP32 = ("train.amp=none", "train.channels_last=off")
BF16 = ("train.amp=bf16",)


def run() -> list[Row]:
    minimal, fast_path = minimal_loop_images_per_second()
    ours = run_images_per_second()
    fp32 = run_images_per_second(*FP32)
    bf16 = run_images_per_second(*BF16)
    minimal2, _ = minimal_loop_images_per_second()  # again, alternating, so load drift hits both sides
    ours2 = run_images_per_second()
    baseline, defaults = max(minimal + minimal2), max(ours + ours2)
    return [
        Row(
            "run() training img/s vs minimal loop (mnist5k)",
            defaults,
            baseline,
            "i/s",
            "hand-written loop, same model/data/precision",
            aim=">=0.97x",
        ),
        Row(
            "run() train.amp=bf16 vs fp32 (mnist5k)",
            max(bf16),
            max(fp32),
            "i/s",
            f"train.amp=none, channels_last=off; defaults here: {fast_path}",
        ),
    ]
