"""How well the surrogate answers configurations it has not seen: 5-fold cross-validation.

    python -m bench.searchsim.validate

Each measured configuration is held out once; the surrogate fitted to the other four fifths
answers it, and the answer is compared with the measurement: Spearman rank correlation of the
best val/acc (what the search is after), of the epoch-3 val/acc (what pruning decides on),
whether it lands on the same side of the 1-in-10 target, and the CPU seconds. The ceiling is
the same configuration measured twice with different seeds (the ``repeats``): no surrogate can
predict the seed.
"""

from __future__ import annotations

import dataclasses
import math
import sys

import numpy as np
from scipy.stats import spearmanr

from bench.searchsim.data import Benchmark, load
from bench.searchsim.surrogate import Surrogate

KINDS = {
    "proximity": "measured curve of the forest-nearest configuration (used)",
    "gower": "measured curve of the nearest configuration, every parameter equal",
    "forest": "the forest's predicted curve (not a measurement)",
}


def cross_validate(bench: Benchmark, kind: str, folds: int = 5, seed: int = 0) -> dict[str, float]:
    curves = [c for c in bench.curves if len(c.val_acc) == bench.epochs]
    order = np.random.default_rng(seed).permutation(len(curves))
    target = bench.target(10)
    measured, answered, m3, a3, mcpu, acpu = [], [], [], [], [], []
    for f in range(folds):
        held = {int(i) for i in order[f::folds]}
        train = tuple(c for i, c in enumerate(curves) if i not in held)
        sur = Surrogate(dataclasses.replace(bench, curves=train), kind=kind)
        for i in sorted(held):
            c = curves[i]
            got = sur.curve(c.params)
            measured.append(c.best)
            answered.append(got.best)
            m3.append(c.val_acc[2])
            a3.append(got.val_acc[2])
            mcpu.append(sum(c.epoch_cpu))
            acpu.append(sum(got.epoch_cpu))
    m, a = np.array(measured), np.array(answered)
    hit, pred = m >= target, a >= target
    return {
        "spearman_best": float(spearmanr(m, a).statistic),
        "spearman_epoch3": float(spearmanr(m3, a3).statistic),
        "mae_best": float(np.mean(np.abs(m - a))),
        "top10_precision": float((hit & pred).sum() / max(pred.sum(), 1)),
        "top10_recall": float((hit & pred).sum() / max(hit.sum(), 1)),
        "answered_top10": float(pred.mean()),
        "cpu_spearman": float(spearmanr(mcpu, acpu).statistic),
        "cpu_median_error": float(np.median(np.abs(np.log(np.array(acpu) / np.array(mcpu))))),
    }


def seed_ceiling(bench: Benchmark) -> dict[str, float]:
    """The same configuration, seed 0 against seed 1."""
    if len(bench.repeats) < 3:
        return {"pairs": float(len(bench.repeats))}
    a = np.array([p.best for p, _ in bench.repeats])
    b = np.array([q.best for _, q in bench.repeats])
    cpu_a = np.array([sum(p.epoch_cpu) for p, _ in bench.repeats])
    cpu_b = np.array([sum(q.epoch_cpu) for _, q in bench.repeats])
    return {
        "pairs": float(len(a)),
        "spearman_best": float(spearmanr(a, b).statistic),
        "mae_best": float(np.mean(np.abs(a - b))),
        "cpu_median_error": float(np.median(np.abs(np.log(cpu_a / cpu_b)))),
    }


def report(bench: Benchmark) -> str:
    lines = [
        f"surrogate validation: {len(bench.curves)} measured configurations, 5-fold cross-validation "
        f"(1-in-10 target {bench.target(10):.4f})",
        f"{'answer':10s} {'rho best':>8s} {'rho ep3':>8s} {'MAE best':>8s} {'top10 prec':>10s} {'recall':>6s} "
        f"{'cpu rho':>7s} {'cpu err':>7s}  how",
    ]
    for kind, how in KINDS.items():
        r = cross_validate(bench, kind)
        lines.append(
            f"{kind:10s} {r['spearman_best']:8.3f} {r['spearman_epoch3']:8.3f} {r['mae_best']:8.4f} "
            f"{r['top10_precision']:10.2f} {r['top10_recall']:6.2f} {r['cpu_spearman']:7.3f} "
            f"{math.expm1(r['cpu_median_error']):7.1%}  {how}"
        )
    c = seed_ceiling(bench)
    if "spearman_best" in c:
        lines.append(
            f"{'seed':10s} {c['spearman_best']:8.3f} {'':8s} {c['mae_best']:8.4f} {'':10s} {'':6s} {'':7s} "
            f"{math.expm1(c['cpu_median_error']):7.1%}  the same configuration, train.seed 0 vs 1 "
            f"({c['pairs']:.0f} pairs): the ceiling"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(load()))
    sys.exit(0)
