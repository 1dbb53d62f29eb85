"""Training-step throughput in bf16 autocast and channels_last against fp32 NCHW.

One training step (forward, backward, Adam) of a few FlexibleCNN shapes and a
ResNet18 on synthetic batches, on the device run() would use, in the four
combinations of bf16 autocast and channels_last. Each row of ``make bench``
is bf16 against fp32 NCHW, with what ``train.amp``/``train.channels_last=auto``
pick on this device alongside (on a CPU they pick fp32 NCHW: bf16 is opt-in
there, see ``flexcnn/hardware.py``); run this module directly for the whole
grid. Combinations are interleaved and the median of REPS timings taken.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from bench.common import Row
from flexcnn.config import load_config
from flexcnn.engine import autocast
from flexcnn.hardware import Hardware, cpu_threads, resolve_hardware
from flexcnn.models.registry import InputSpec, build_model

REPS = 3
STEPS = 12
# name, FlexibleCNN widths (None: ResNet18), input channels, size, batch
SHAPES: list[tuple[str, list[int] | None, int, int, int]] = [
    ("[8,16] 28px gray", [8, 16], 1, 28, 128),
    ("[16,32] 28px gray", [16, 32], 1, 28, 128),
    ("[32,64,128] 28px gray", [32, 64, 128], 1, 28, 128),
    ("[32,64,128] 32px RGB", [32, 64, 128], 3, 32, 128),
    ("[64,128,256] 32px RGB", [64, 128, 256], 3, 32, 128),
    ("ResNet18 64px RGB", None, 3, 64, 64),
]
COMBOS = {
    "fp32": (None, False),
    "bf16": (torch.bfloat16, False),
    "fp32+CL": (None, True),
    "bf16+CL": (torch.bfloat16, True),
}


def _model(widths: list[int] | None, channels: int, size: int) -> nn.Module:
    if widths is None:
        import torchvision

        return torchvision.models.resnet18(num_classes=10)
    config = load_config(None, [f"model.num_filters={widths}", "model.dense_units=[64]"])
    return build_model(config.model, InputSpec(channels, size, 10)).module


def _stepper(
    model: nn.Module, device: torch.device, amp: torch.dtype | None, channels_last: bool, shape: tuple[int, ...]
) -> Callable[[], float]:
    """A function that times STEPS training steps and returns images per second."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=layout)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(*shape, device=device).contiguous(memory_format=layout)
    y = torch.randint(0, 10, (shape[0],), device=device)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        with autocast(device, amp):
            loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def timed() -> float:
        start = time.perf_counter()
        for _ in range(STEPS):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return STEPS * shape[0] / (time.perf_counter() - start)

    for _ in range(3):  # warm-up: allocator, oneDNN/cuDNN kernel choice
        step()
    return timed


def grid(hw: Hardware) -> dict[str, dict[str, float]]:
    """images/s of every combination for every shape, plus the combination ``auto`` picks."""
    out: dict[str, dict[str, float]] = {}
    for name, widths, channels, size, batch in SHAPES:
        torch.manual_seed(0)
        shape = (batch, channels, size, size)
        steppers = {k: _stepper(_model(widths, channels, size), hw.device, *v, shape) for k, v in COMBOS.items()}
        samples: dict[str, list[float]] = {k: [] for k in steppers}
        for _ in range(REPS):
            for k, timed in steppers.items():
                samples[k].append(timed())
        out[name] = {k: statistics.median(v) for k, v in samples.items()}
        out[name]["auto"] = out[name][
            ("bf16" if hw.amp_dtype == torch.bfloat16 else "fp32") + ("+CL" if hw.channels_last else "")
        ]
        out[name]["auto_is"] = hw.describe()  # type: ignore[assignment]
    return out


def _hardware() -> Hardware:
    threads = cpu_threads(None)
    if threads is not None:
        torch.set_num_threads(threads)
    return resolve_hardware(load_config(None, []).train)


def run() -> list[Row]:
    results = grid(_hardware())
    return [
        Row(f"train step {name}: bf16 vs fp32", r["bf16"], r["fp32"], "i/s", f"fp32 NCHW; auto = {r['auto_is']}")
        for name, r in results.items()
    ]


if __name__ == "__main__":
    hw = _hardware()
    results = grid(hw)
    print(f"training-step images/s on {hw.device}, {torch.get_num_threads()} threads")
    print(f"{'model, input':24s}" + "".join(f"{k:>10s}" for k in COMBOS) + "  auto picks")
    for name, r in results.items():
        print(f"{name:24s}" + "".join(f"{r[k]:>10.0f}" for k in COMBOS) + f"  {r['auto_is']}")
