"""Every CUDA row in one run, under eight minutes: ``make bench-gpu`` (wraps this in ``timeout``).

    python -m bench.gpu                 # on a machine with a CUDA GPU
    python -m bench.gpu --device cpu --quick   # the GPU-only sections, tiny, on CPU: checks the code runs

Sections, most wanted first; each prints its rows as soon as it ends (a timeout keeps what was
printed), one that fails prints why and the next runs, and a section that would start after the
deadline is skipped with a note:

1. ResNet50 / VGG19 training steps, bf16 autocast + channels_last vs fp32, per fine-tuning
   strategy, and ResNet50 at batch 256 vs NVIDIA's published ~2,600-2,800 img/s
   (bench_pretrained.gpu_rows).
2. FlexibleCNN on CIFAR-sized data (3x32x32, synthetic uint8): resident on the GPU
   (``data.resident=auto``) vs a DataLoader feeding it (``data.resident=never``), through run()'s
   training loop (flexcnn.engine.train_one_epoch) and loaders.
3. Trials per GPU: 1, 2 and 4 trial processes training that CNN side by side on one GPU,
   aggregate images/s against one.
4. bf16 / channels_last grid of FlexibleCNN shapes and ResNet18 (bench_precision).
5. run() vs a minimal loop, and bf16 vs fp32 through run() (bench_loop).

Without a CUDA device it prints why and exits 0, so CI and CPU machines can call it.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import torch

from bench.common import Row, print_table

DEADLINE_S = 450.0  # inside make's 480 s timeout: the last section's table still gets printed


@dataclass(frozen=True)
class Size:
    images: int  # synthetic training images per trial
    epochs: int  # timed epochs after one warm-up epoch
    widths: tuple[int, ...]
    batch: int


FULL = Size(images=20_000, epochs=2, widths=(64, 128, 256), batch=256)
QUICK = Size(images=512, epochs=1, widths=(8, 16), batch=64)


def _cifar_like(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Learnable synthetic CIFAR-sized data: uint8 (n, 3, 32, 32) whose mean colour follows the label."""
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (n,), generator=g)
    noise = torch.randint(0, 120, (n, 3, 32, 32), generator=g, dtype=torch.int16)
    base = (labels.view(-1, 1, 1, 1) * 12).to(torch.int16)
    images = (noise + base).clamp(0, 255).to(torch.uint8)
    return images.to(device), labels.to(device)


def _trainer(device: torch.device, size: Size) -> tuple[Callable[[object], int], object]:
    """A FlexibleCNN, its optimiser and run()'s batch transform; returns (train one epoch, transform)."""
    from flexcnn.config import load_config
    from flexcnn.data.augment import BatchTransform
    from flexcnn.engine import train_one_epoch
    from flexcnn.hardware import resolve_hardware
    from flexcnn.models.registry import InputSpec, build_model

    overrides = [f"model.num_filters={list(size.widths)}", "model.dense_units=[128]", f"train.device={device.type}"]
    config = load_config(None, overrides)
    hw = resolve_hardware(config.train)  # bf16 + channels_last on a recent GPU, as run() picks
    model = build_model(config.model, InputSpec(3, 32, 10)).module.to(device)
    if hw.channels_last:
        model = model.to(memory_format=torch.channels_last)
    transform = BatchTransform(
        in_channels=3,
        out_channels=3,
        in_size=32,
        out_size=32,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        preset="standard",
        hflip=True,
        channels_last=hw.channels_last,
        device=device,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = torch.nn.CrossEntropyLoss()

    def epoch(loader: object) -> int:
        model.train()
        stats = train_one_epoch(
            model,
            loader,  # type: ignore[arg-type]
            lambda x: transform(x, train=True),
            optimizer,
            loss,
            device=device,
            amp_dtype=hw.amp_dtype,
        )
        return stats.images

    return epoch, transform


def _images_per_second(step: Callable[[], int], epochs: int, device: torch.device) -> float:
    step()  # warm-up: cuDNN autotuning, allocator, loader workers
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start, images = time.perf_counter(), 0
    for _ in range(epochs):
        images += step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return images / (time.perf_counter() - start)


def resident_rows(device: torch.device, size: Size) -> list[Row]:
    from flexcnn.data.base import ImageTensors
    from flexcnn.data.loaders import make_loader
    from flexcnn.hardware import loader_workers

    images, labels = _cifar_like(size.images, torch.device("cpu"))
    split = ImageTensors(images, labels)
    epoch, _ = _trainer(device, size)
    common = {"batch_size": size.batch, "device": device, "train": True}
    resident = make_loader(split, resident=True, generator=torch.Generator().manual_seed(0), **common)
    streamed = make_loader(split, resident=False, generator=torch.Generator().manual_seed(0), **common)
    fast = _images_per_second(lambda: epoch(resident), size.epochs, device)
    slow = _images_per_second(lambda: epoch(streamed), size.epochs, device)
    return [
        Row(
            f"FlexibleCNN{list(size.widths)} 32px RGB {device.type}: resident",
            fast,
            slow,
            "i/s",
            f"data.resident=never: DataLoader, {loader_workers()} worker(s)",
            aim=">1x",
        )
    ]


def _trial_process(device_name: str, size: Size, ready: object, go: object, out: object) -> None:
    from flexcnn.data.base import ImageTensors
    from flexcnn.data.loaders import make_loader

    device = torch.device(device_name)
    images, labels = _cifar_like(size.images, torch.device("cpu"))
    # Resident: the loader keeps the uint8 images on the device, as data.resident=auto does.
    loader = make_loader(ImageTensors(images, labels), batch_size=size.batch, device=device, train=True, resident=True)
    epoch, _ = _trainer(device, size)
    epoch(loader)  # warm-up before the common start
    ready.put(1)  # type: ignore[attr-defined]
    go.wait()  # type: ignore[attr-defined]
    start, n = time.perf_counter(), 0
    for _ in range(size.epochs):
        n += epoch(loader)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    out.put((n, time.perf_counter() - start))  # type: ignore[attr-defined]


def trials_per_gpu_rows(device: torch.device, size: Size, counts: tuple[int, ...] = (1, 2, 4)) -> list[Row]:
    """Aggregate images/s of K trial processes on one device, K = counts; each against K = 1."""
    ctx = mp.get_context("spawn")  # CUDA cannot be used in forked children
    aggregate: dict[int, float] = {}
    for k in counts:
        ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
        procs = [ctx.Process(target=_trial_process, args=(str(device), size, ready, go, out)) for _ in range(k)]
        for p in procs:
            p.start()
        for _ in procs:
            ready.get(timeout=300)
        go.set()
        results = [out.get(timeout=300) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        # All started together; the group's pace is its images over the slowest member's time.
        aggregate[k] = sum(n for n, _ in results) / max(s for _, s in results)
    return [
        Row(
            f"{k} trials on one {device.type}: aggregate img/s",
            aggregate[k],
            aggregate[counts[0]],
            "i/s",
            f"{counts[0]} trial; FlexibleCNN{list(size.widths)}, resident 32px RGB",
            aim=f"<={k}x",
        )
        for k in counts[1:]
    ]


def pretrained_rows() -> list[Row]:
    from bench import bench_pretrained

    return bench_pretrained.gpu_rows()


def precision_rows() -> list[Row]:
    from bench import bench_precision

    return bench_precision.run()


def loop_rows() -> list[Row]:
    from bench import bench_loop

    return bench_loop.run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="every CUDA benchmark row, under a deadline")
    parser.add_argument("--device", default="cuda", help="cuda (default), or cpu to check the GPU-only sections")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a code check, not a measurement)")
    parser.add_argument("--deadline", type=float, default=DEADLINE_S, help="seconds; later sections are skipped")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            f"bench-gpu: no CUDA device here (torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
            "nothing measured. Run `make bench-gpu` on a machine with an NVIDIA GPU.",
            flush=True,
        )
        return 0
    device = torch.device(args.device)
    size = QUICK if args.quick else FULL
    if device.type == "cuda":
        print(f"bench-gpu on {torch.cuda.get_device_name(device)}, torch {torch.__version__}", flush=True)
        sections: list[tuple[str, Callable[[], list[Row]]]] = [
            ("ResNet50 / VGG19: bf16 + channels_last vs fp32, vs published", pretrained_rows),
            ("FlexibleCNN, CIFAR-sized: resident vs DataLoader", lambda: resident_rows(device, size)),
            ("trials per GPU", lambda: trials_per_gpu_rows(device, size)),
            ("bf16 / channels_last grid", precision_rows),
            ("run() vs minimal loop; bf16 vs fp32", loop_rows),
        ]
    else:  # a code check of the sections this module adds; the others are CPU benches already
        sections = [
            ("FlexibleCNN, CIFAR-sized: resident vs DataLoader", lambda: resident_rows(device, size)),
            ("trials per device", lambda: trials_per_gpu_rows(device, size, (1, 2))),
        ]
    start = time.perf_counter()
    rows: list[Row] = []
    failed = 0
    for title, section in sections:
        elapsed = time.perf_counter() - start
        if elapsed > args.deadline:
            print(f"skipped (deadline {args.deadline:.0f} s passed at {elapsed:.0f} s): {title}", flush=True)
            continue
        print(f"\n== {title}", file=sys.stderr, flush=True)
        try:
            got = section()
        except Exception:
            failed += 1
            print(f"section failed: {title}\n{traceback.format_exc()}", flush=True)
            continue
        print_table(got, f"{title} ({time.perf_counter() - start:.0f} s)")
        rows += got
    print_table(rows, f"bench-gpu: all rows ({time.perf_counter() - start:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
