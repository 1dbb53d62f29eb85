"""The data path: resident tensors vs a DataLoader, and the decoded-image cache vs decoding.

Every comparison runs its sides in one process through the same training
loop (``flexcnn.engine.train_one_epoch``, the loop run() uses, with the same
model and optimiser), one warm-up epoch per side (worker start-up, allocator),
then epochs interleaved A, B, A, B, ... so that drift in machine load hits
both sides alike; figures are medians. Besides wall time each row gives the
CPU seconds of the whole process tree (this process plus its DataLoader
workers), because on a shared machine a side with worker processes gets a
larger share of the cores and wall time alone flatters it.

Rows:

- mnist5k, standard augmentation, training img/s: the data on the device
  (``data.resident=auto``: batches indexed and augmented there) vs the
  DataLoader path (``data.resident=never``: per-item fetch and collate in
  worker processes, the same per-batch augmentation), and vs the classic
  per-image pipeline (torchvision v2 transforms per image in DataLoader
  workers), the "per-image PIL loader" pace the issue talks about.
- An image folder of 1,000 64 px JPEGs written to a temporary folder,
  streamed (``data.resident=never``): the decoded-image cache vs decoding in
  DataLoader workers, for one epoch of the data path (loader + batch
  augmentation, no model) and for training epochs with a small CNN.
- The same folder held in memory: the data set load that starts every trial
  (``load_splits``) from the cache (trials 2..N) vs decoding, and the first
  trial's extra cost of writing the cache.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from bench.common import Row
from flexcnn.config import RunConfig, load_config
from flexcnn.data import load_splits
from flexcnn.data.base import ImageTensors
from flexcnn.data.loaders import make_loader
from flexcnn.engine import train_one_epoch
from flexcnn.hardware import cpu_threads, loader_workers, resolve_hardware
from flexcnn.pipeline import build_pipeline

REPS = 3
MNIST = [
    "data.source=mnist5k",
    "data.augment=standard",
    "data.hflip=false",
    "data.batch_size=128",
    "data.limit=2000",  # training images per epoch: enough batches, a bench that ends on a loaded machine
    "model.num_filters=[32,64,128]",
]
FOLDER_IMAGES, FOLDER_PX, FOLDER_CLASSES = 1000, 64, 10
SMALL_MODEL = ["model.num_filters=[16,32]", "model.dense_units=[64]", "data.batch_size=64", "data.augment=standard"]
CPU = torch.device("cpu")


def write_jpeg_folder(root: Path, n: int = FOLDER_IMAGES, px: int = FOLDER_PX, classes: int = FOLDER_CLASSES) -> Path:
    """``root/train/c<k>/<i>.jpg``: noisy images whose colour depends on the class (learnable)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        c = i % classes
        folder = root / "train" / f"c{c}"
        folder.mkdir(parents=True, exist_ok=True)
        base = np.zeros((px, px, 3), np.float32)
        base[..., c % 3] = 60 + 15 * c
        pixels = np.clip(base + rng.normal(0, 40, (px, px, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)
    return root


def tree_cpu_seconds() -> float:
    """CPU seconds of this process and its live children (DataLoader workers), from /proc where there is one."""
    total = time.process_time()
    if not os.path.isdir("/proc"):
        return total
    me, tick = os.getpid(), os.sysconf("SC_CLK_TCK")
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:  # ppid; utime and stime follow at fields 14 and 15
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


@contextmanager
def _env(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


Side = tuple[Iterable[tuple[torch.Tensor, torch.Tensor]], Callable[[torch.Tensor], torch.Tensor]]
T = TypeVar("T")


def race(sides: dict[str, T], step: Callable[[T], int], reps: int = REPS) -> dict[str, dict[str, float]]:
    """Median wall seconds, CPU seconds and images per epoch of each side, epochs interleaved after a warm-up."""
    for side in sides.values():
        step(side)
    samples: dict[str, dict[str, list[float]]] = {k: {"wall": [], "cpu": [], "images": []} for k in sides}
    for _ in range(reps):
        for name, side in sides.items():
            cpu, wall = tree_cpu_seconds(), time.perf_counter()
            images = step(side)
            samples[name]["wall"].append(time.perf_counter() - wall)
            samples[name]["cpu"].append(tree_cpu_seconds() - cpu)
            samples[name]["images"].append(images)
    return {k: {m: statistics.median(v) for m, v in s.items()} for k, s in samples.items()}


def _trainer(config: RunConfig) -> tuple[Any, Callable[[Side], int]]:
    """The pipeline and a step that trains one epoch over a side with run()'s loop, model, optimiser and precision."""
    hw = resolve_hardware(config.train.model_copy(update={"device": "cpu"}))
    torch.manual_seed(0)
    pipe = build_pipeline(config, CPU, hw.channels_last)
    model = pipe.adapter.module
    if hw.channels_last:  # as run() does, with its precision too (bf16 autocast where the CPU has it)
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = torch.nn.CrossEntropyLoss()

    def step(side: Side) -> int:
        batches, prepare = side
        model.train()
        return train_one_epoch(model, batches, prepare, optimizer, loss, device=CPU, amp_dtype=hw.amp_dtype).images

    return pipe, step


def _augment(pipe: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda images: pipe.transform(images, train=True)


def _loaders(split: Any, batch_size: int, **kw: Any) -> dict[str, Any]:
    common = {"batch_size": batch_size, "device": CPU, "train": True, "generator": torch.Generator().manual_seed(0)}
    return {
        "resident": make_loader(split, resident=True, **common, **kw),
        "loader": make_loader(split, resident=False, **common, **kw),
    }


def classic_loader(train: ImageTensors, batch_size: int, mean: float, std: float) -> Any:
    """The usual torchvision recipe: PIL image -> v2 transforms per image, in DataLoader workers."""
    from torchvision.transforms import v2

    transform = v2.Compose(
        [
            v2.RandomAffine(degrees=10, translate=(1 / 8, 1 / 8)),  # the "standard" preset, no flip for digits
            v2.PILToTensor(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize([mean], [std]),
        ]
    )

    class PerImage(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
        def __len__(self) -> int:
            return len(train)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            from PIL import Image

            return transform(Image.fromarray(train.images[i, 0].numpy())), int(train.labels[i])

    workers = loader_workers()
    return torch.utils.data.DataLoader(
        PerImage(), batch_size=batch_size, shuffle=True, drop_last=True, num_workers=workers,
        persistent_workers=workers > 0, prefetch_factor=4 if workers else None,
    )  # fmt: skip


def _row(name: str, figure: dict[str, float], base: dict[str, float], what: str, aim: str = "") -> Row:
    cpu = base["cpu"] / figure["cpu"] if figure["cpu"] else float("inf")
    return Row(
        name,
        figure["images"] / figure["wall"],
        base["images"] / base["wall"],
        "i/s",
        f"{what}; CPU s/epoch {figure['cpu']:.2f} vs {base['cpu']:.2f} ({cpu:.2f}x)",
        aim=aim,
    )


def mnist_rows(model: list[str] | None = None, label: str = "") -> list[Row]:
    config = load_config(None, [*MNIST, *(model or [])])
    pipe, step = _trainer(config)
    loaders = _loaders(pipe.splits.train, config.data.batch_size)
    classic = classic_loader(pipe.splits.train, config.data.batch_size, pipe.input.mean[0], pipe.input.std[0])
    m = race(
        {
            "resident": (loaders["resident"], _augment(pipe)),
            "loader": (loaders["loader"], _augment(pipe)),
            "classic": (classic, lambda x: x),
        },
        step,
    )
    workers = loader_workers()
    return [
        _row(
            f"mnist5k{label or ' std aug'}: resident vs DataLoader",
            m["resident"],
            m["loader"],
            f"data.resident=never, {workers} worker(s)",
            ">=1.3x",
        ),
        _row(
            f"mnist5k{label or ' std aug'}: resident vs per-image",
            m["resident"],
            m["classic"],
            f"torchvision v2 per PIL image, {workers} worker(s)",
        ),
    ]


def folder_rows(tmp: Path) -> list[Row]:
    root = write_jpeg_folder(tmp / "jpegs")
    cache = tmp / "cache"
    streamed = ["data.source=imagefolder", f"data.root={root}", "data.resident=never", *SMALL_MODEL]
    config = load_config(None, [*streamed, f"data.cache_dir={cache}"])
    pipe, step = _trainer(config)  # trial 1: writes the cache
    uncached = load_splits(load_config(None, streamed).data).train
    sides = {
        "cached": (make_loader(pipe.splits.train, batch_size=64, device=CPU, train=True, resident=False),
                   _augment(pipe)),
        "uncached": (make_loader(uncached, batch_size=64, device=CPU, train=True, resident=False), _augment(pipe)),
    }  # fmt: skip

    def data_only(side: Side) -> int:
        batches, prepare = side
        return sum(len(prepare(images)) for images, _ in batches)

    def read_only(side: Side) -> int:
        return sum(len(labels) for _, labels in side[0])

    read = race(sides, read_only, REPS + 2)
    data = race(sides, data_only, REPS + 2)
    train = race(sides, step)

    resident = ["data.source=imagefolder", f"data.root={root}"]
    fresh = iter(range(10**6))

    def load_images(extra: list[str], env: dict[str, str] | None = None) -> int:
        with _env(**(env or {})):
            return len(load_splits(load_config(None, [*resident, *extra]).data).train)

    load = race(
        {
            "hit": lambda: load_images([f"data.cache_dir={cache}"]),
            "decode": lambda: load_images([], {"FLEXCNN_DECODE_CACHE": "0"}),
            "write": lambda: load_images([f"data.cache_dir={tmp / f'fresh-{next(fresh)}'}"]),
        },
        lambda load: load(),
        REPS + 2,
    )
    workers = loader_workers()
    return [
        _row(
            "1k 64px JPEGs streamed, loader: cached",
            read["cached"],
            read["uncached"],
            f"decoding in {workers} DataLoader worker(s)",
            ">=3x",
        ),
        _row(
            "1k 64px JPEGs streamed, +aug: cached",
            data["cached"],
            data["uncached"],
            "same, with the standard batch augmentation on CPU",
        ),
        _row(
            "1k 64px JPEGs streamed, training: cached",
            train["cached"],
            train["uncached"],
            f"same, training a 2-block CNN, {workers} worker(s)",
        ),
        Row(
            "1k 64px JPEGs in memory: trial data load",
            1000 * load["hit"]["wall"],
            1000 * load["decode"]["wall"],
            "ms",
            f"decoding every trial (cache off); CPU s {load['hit']['cpu']:.2f} vs {load['decode']['cpu']:.2f}",
            higher_is_better=False,
        ),
        Row(
            "  ... first trial, writing the cache",
            1000 * load["write"]["wall"],
            1000 * load["decode"]["wall"],
            "ms",
            f"decoding without a cache; CPU s {load['write']['cpu']:.2f} vs {load['decode']['cpu']:.2f}",
            higher_is_better=False,
        ),
    ]


def run() -> list[Row]:
    # The thread count a trial would use here (train.threads unset): FLEXCNN_THREADS, OMP_NUM_THREADS, quota.
    threads = cpu_threads(None)
    if threads is not None:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp, _env(FLEXCNN_CACHE=str(Path(tmp) / "flexcnn-cache")):
        rows = mnist_rows()
        rows += mnist_rows(["model.num_filters=[8,16]", "model.dense_units=[32]"], " small CNN")
        return rows + folder_rows(Path(tmp))


if __name__ == "__main__":
    from bench.common import print_table

    print_table(run(), "data path")
