"""run()'s training throughput against a minimal hand-written PyTorch loop.

Same model, batch size, data (mnist5k, resident, standard augmentation) and
epochs, in one process. Each side is timed over whole epochs after one
warm-up epoch; the figure is training images per second.
"""

from __future__ import annotations

import tempfile
import time

import torch

from bench.common import Row
from flexcnn.config import load_config
from flexcnn.run import build_pipeline
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


def minimal_loop_images_per_second() -> float:
    """The plainest correct loop over the same pipeline: no checkpoints, no metrics, no reporters."""
    config = load_config(None, OVERRIDES)
    torch.manual_seed(0)
    pipe = build_pipeline(config, torch.device("cpu"))
    model = pipe.adapter.module
    images, labels = pipe.splits.train.images, pipe.splits.train.labels  # type: ignore[union-attr]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    bs = config.data.batch_size
    seen, elapsed = 0, 0.0
    for epoch in range(EPOCHS + 1):
        model.train()
        start = time.perf_counter()
        order = torch.randperm(len(labels))
        n = 0
        for b in range(len(labels) // bs):
            idx = order[b * bs : (b + 1) * bs]
            x = pipe.transform(images[idx], train=True)
            loss = loss_fn(model(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += bs
        if epoch > 0:  # epoch 0 warms up allocators and caches
            seen += n
            elapsed += time.perf_counter() - start
    return seen / elapsed


def run_images_per_second() -> float:
    with tempfile.TemporaryDirectory() as tmp:
        result = run_training(load_config(None, OVERRIDES), run_dir=tmp)
    rows = result.history[1:]
    return sum(r["images_per_second"] * r["epoch_seconds"] for r in rows) / sum(r["epoch_seconds"] for r in rows)


def run() -> list[Row]:
    minimal = minimal_loop_images_per_second()
    ours = run_images_per_second()
    minimal2 = minimal_loop_images_per_second()  # again, to bracket drift in machine load
    baseline = (minimal + minimal2) / 2
    return [
        Row(
            "run() training img/s vs minimal loop (mnist5k)",
            ours,
            baseline,
            "i/s",
            "hand-written loop, same model/data",
            aim=">=0.95x",
        )
    ]
