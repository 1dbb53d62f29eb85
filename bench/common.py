"""A shared table for benchmark rows: figure, baseline, ratio, aim."""

from __future__ import annotations

import platform
from dataclasses import dataclass

import torch


@dataclass
class Row:
    name: str
    value: float
    baseline: float
    unit: str
    baseline_name: str
    aim: str = ""
    higher_is_better: bool = True

    @property
    def ratio(self) -> float:
        if self.higher_is_better:
            return self.value / self.baseline if self.baseline else float("inf")
        return self.baseline / self.value if self.value else float("inf")


def machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"{gpu}, torch {torch.__version__}"
    )


def print_table(rows: list[Row], title: str = "flexcnn benchmarks") -> None:
    print(f"\n{title}  ({machine()})")
    header = f"{'benchmark':44s} {'figure':>14s} {'baseline':>14s} {'ratio':>7s}  {'aim':10s} baseline is"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r.name:44s} {r.value:>10.1f} {r.unit:3s} {r.baseline:>10.1f} {r.unit:3s} "
            f"{r.ratio:>6.2f}x  {r.aim:10s} {r.baseline_name}"
        )
