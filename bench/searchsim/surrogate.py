"""Answer any configuration of the space with a measured learning curve and its CPU seconds.

Why a surrogate and not a table: the space has 19,440 categorical combinations times a
continuous learning rate, and an hour of this machine measures a few hundred trials. A table of
every point is impossible, and a discretised sub-grid would change the space the samplers see.

Why a measured curve and not a model's prediction (LCBench-style lookup, YAHPO-style fit): a
regression model's prediction is an average, which shrinks the top of the value distribution,
so fewer configurations would reach a 1-in-50 target than in the measurements, and its curves
are smoother than real ones. Returning the measured curve of the most similar measured
configuration keeps the distribution of final values, the epoch-to-epoch noise and the curve
shapes exactly as measured.

"Most similar" is learned, not assumed: a random forest is fitted to the measured curves
(val/acc at every epoch) and two configurations are similar when they fall in the same leaves
in many trees (random-forest proximity, Breiman 2001). So the learning rate and batch size,
which decide most of the outcome here, decide the neighbour, and the activation, which barely
matters, does not; an unweighted distance over ten parameters would let it.

The accuracy curve comes from the neighbour; its CPU seconds are rescaled to the queried
configuration's architecture, whose cost differs from the neighbour's (a kernel of 7 costs
about five times a kernel of 3): a ridge regression of log CPU seconds per epoch on the
model's multiply-accumulates per image, the batch size and the other cost-relevant choices.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from optuna.distributions import CategoricalDistribution, FloatDistribution

from bench.searchsim.data import Benchmark, Curve
from bench.searchsim.space import search_space

# Choices that change the arithmetic of a training step; the learning rate and dropout do not.
COST_PARAMS = (
    "model.num_filters",
    "model.kernel_size",
    "model.activation",
    "model.batch_norm",
    "model.residual",
    "model.dense_units",
    "data.augment",
    "data.batch_size",
)


@dataclass(frozen=True)
class SimCurve:
    """What a simulated trial of a configuration does: val/acc and CPU seconds per epoch."""

    val_acc: tuple[float, ...]
    epoch_cpu: tuple[float, ...]
    startup_cpu: float
    final_cpu: float
    source: int  # the measured configuration it came from

    @property
    def best(self) -> float:
        return max(self.val_acc)


class Encoder:
    """Configurations (as Optuna stores them) -> numeric feature rows for the forest.

    Numbers and booleans stay numbers (log-scaled when log-distributed or powers of two), text and
    list choices become one-hot columns.
    """

    def __init__(self, names: Sequence[str] | None = None) -> None:
        space = search_space()
        self.columns: list[tuple[str, Any]] = []  # (parameter, None for numeric | choice for one-hot)
        self.log: set[str] = set()
        for p in space.params:
            if names is not None and p.name not in names:
                continue
            dist = p.distribution
            if isinstance(dist, CategoricalDistribution):
                numeric = all(isinstance(c, int | float) for c in dist.choices)  # bools are ints
                if numeric:
                    self.columns.append((p.name, None))
                    if all(isinstance(c, int) and not isinstance(c, bool) and c > 1 for c in dist.choices):
                        self.log.add(p.name)  # batch 32/64/128, dense 64/128/256: ratios matter
                else:
                    self.columns += [(p.name, c) for c in dist.choices]
            elif isinstance(dist, FloatDistribution):
                self.columns.append((p.name, None))
                if dist.log:
                    self.log.add(p.name)

    def row(self, params: dict[str, Any]) -> list[float]:
        out = []
        for name, choice in self.columns:
            value = params[name]
            if choice is not None:
                out.append(1.0 if value == choice else 0.0)
            else:
                out.append(math.log2(float(value)) if name in self.log else float(value))
        return out

    def matrix(self, rows: Sequence[dict[str, Any]]) -> np.ndarray:
        return np.array([self.row(p) for p in rows], dtype=np.float64)


def macs_per_image(num_filters: list[int], kernel: int, residual: bool, dense: int, size: int = 28) -> float:
    """Multiply-accumulates of one forward pass of this FlexibleCNN on a ``size`` x ``size`` digit.

    The layers of flexcnn.models.flexible_cnn ("same" convs, a 1x1 projection on a residual block
    whose width changes, 2x2 max pooling after each block, global average pooling, one dense
    layer); equal to torch's FlopCounterMode / 2 on the real model, at a thousandth of the cost.
    """
    macs, in_ch = 0.0, 1
    for out_ch in num_filters:
        macs += size * size * kernel * kernel * in_ch * out_ch
        if residual and in_ch != out_ch:
            macs += size * size * in_ch * out_ch
        size = (size - 2) // 2 + 1 if size >= 2 else size
        in_ch = out_ch
    return macs + in_ch * dense + dense * 10


class CostModel:
    """log CPU seconds per epoch ~ ridge(log MACs, the other cost-relevant choices)."""

    def __init__(self, curves: Sequence[Curve]) -> None:
        from sklearn.linear_model import Ridge

        self.encoder = Encoder(COST_PARAMS)
        # Epochs 2.. only: the first carries one-off warm-up (oneDNN kernels for new shapes),
        # which the neighbour's own first epoch supplies.
        y = np.array([math.log(float(np.median(c.epoch_cpu[1:] or c.epoch_cpu))) for c in curves])
        self.model = Ridge(alpha=1e-3).fit(self._x([c.params for c in curves]), y)

    def _x(self, rows: Sequence[dict[str, Any]]) -> np.ndarray:
        base = self.encoder.matrix(rows)
        macs = np.array([[math.log(_macs(p))] for p in rows])
        return np.hstack([base, macs])

    def log_epoch_cpu(self, params: dict[str, Any]) -> float:
        return float(self.model.predict(self._x([params]))[0])


def _macs(p: dict[str, Any]) -> float:
    return macs_per_image(
        json.loads(p["model.num_filters"]),
        int(p["model.kernel_size"]),
        bool(p["model.residual"]),
        int(p["model.dense_units"]),
    )


class FlatForest:
    """The forest's trees as one node table, walked for all trees at once.

    sklearn's ``apply`` on a single row costs about 10 ms for 300 trees (a Python call per tree);
    a replay asks for thousands of configurations, so this walks all trees together in numpy.
    Leaf ids are node indices within each tree, as ``apply`` returns them.
    """

    def __init__(self, forest: Any) -> None:
        trees = [est.tree_ for est in forest.estimators_]
        sizes = np.array([t.node_count for t in trees])
        self.offset = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.left = np.concatenate(
            [np.where(t.children_left >= 0, t.children_left + o, -1) for t, o in zip(trees, self.offset, strict=True)]
        )
        self.right = np.concatenate(
            [np.where(t.children_right >= 0, t.children_right + o, -1) for t, o in zip(trees, self.offset, strict=True)]
        )
        self.feature = np.concatenate([t.feature for t in trees])
        self.threshold = np.concatenate([t.threshold for t in trees])

    def apply(self, x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float32)  # sklearn's trees compare float32 features with their thresholds
        node = self.offset.copy()
        while True:
            inner = self.left[node] >= 0
            if not inner.any():
                return node - self.offset
            n = node[inner]
            go_left = x[self.feature[n]] <= self.threshold[n]
            node[inner] = np.where(go_left, self.left[n], self.right[n])


class Surrogate:
    """``curve(params)``: the measured curve of the random-forest-nearest measured configuration.

    ``kind`` picks how the neighbour is found, for validation: ``proximity`` (the default; see the
    module docstring), ``gower`` (unweighted: every parameter counts the same) or ``forest`` (not
    a neighbour: the forest's predicted curve, for comparison only).
    """

    def __init__(self, bench: Benchmark, *, kind: str = "proximity", trees: int = 300, seed: int = 0) -> None:
        from sklearn.ensemble import RandomForestRegressor

        self.curves = [c for c in bench.curves if len(c.val_acc) == bench.epochs]
        self.epochs = bench.epochs
        self.kind = kind
        self.encoder = Encoder()
        self.x = self.encoder.matrix([c.params for c in self.curves])
        y = np.array([c.val_acc for c in self.curves])
        self.forest = RandomForestRegressor(
            n_estimators=trees, min_samples_leaf=2, max_features=0.5, random_state=seed, n_jobs=1
        ).fit(self.x, y)
        self.leaves = self.forest.apply(self.x)  # (n_measured, trees)
        self.flat = FlatForest(self.forest)
        self.cost = CostModel(self.curves)
        self.log_cost = np.array([self.cost.log_epoch_cpu(c.params) for c in self.curves])
        span = self.x.max(axis=0) - self.x.min(axis=0)
        self.span = np.where(span > 0, span, 1.0)
        self._memo: dict[str, SimCurve] = {}

    def neighbour(self, params: dict[str, Any]) -> int:
        x = np.array([self.encoder.row(params)])
        if self.kind == "gower":
            return int(np.argmin((np.abs(self.x - x) / self.span).sum(axis=1)))
        shared = (self.leaves == self.flat.apply(x[0])).sum(axis=1)
        best = np.flatnonzero(shared == shared.max())
        if len(best) == 1:
            return int(best[0])
        # Ties: the closest in plain distance, so the answer does not depend on the order of the data.
        return int(best[np.argmin((np.abs(self.x[best] - x) / self.span).sum(axis=1))])

    def curve(self, params: dict[str, Any]) -> SimCurve:
        key = json.dumps(params, sort_keys=True)
        hit = self._memo.get(key)
        if hit is None:
            hit = self._memo[key] = self._curve(params)
        return hit

    def _curve(self, params: dict[str, Any]) -> SimCurve:
        n = self.neighbour(params)
        src = self.curves[n]
        scale = math.exp(self.cost.log_epoch_cpu(params) - self.log_cost[n])
        val = src.val_acc
        if self.kind == "forest":
            val = tuple(float(v) for v in self.forest.predict(np.array([self.encoder.row(params)]))[0])
        return SimCurve(
            val_acc=val,
            epoch_cpu=tuple(c * scale for c in src.epoch_cpu),
            startup_cpu=src.startup_cpu,
            final_cpu=src.final_cpu * scale,
            source=src.index,
        )
