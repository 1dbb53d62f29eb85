"""Classification metrics from predicted probabilities, computed with torchmetrics.

Everything here returns numbers (floats, lists, tensors) or, for the confusion
matrix, a PNG; turning them into a dashboard's tables and charts is the
reporters' job.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

# (class name, x, y) points of per-class curves: (fpr, tpr) for ROC, (recall, precision) for PR.
CurvePoints = list[tuple[str, float, float]]


@dataclass
class ClassificationReport:
    """Scalar and per-class metrics of one split."""

    acc: float
    loss: float
    f1_macro: float
    precision_macro: float
    recall_macro: float
    auroc_macro: float | None
    per_class: dict[str, dict[str, float]]  # class -> {precision, recall, f1, acc, support}
    confusion: Tensor  # (C, C) counts, rows = true class
    # Rendered confusion images by (classes, title): the run folder and W&B show one picture, drawn once.
    _confusion_pngs: dict[tuple[tuple[str, ...], str], bytes] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def scalars(self, prefix: str) -> dict[str, float]:
        out = {
            f"{prefix}/acc": self.acc,
            f"{prefix}/loss": self.loss,
            f"{prefix}/f1_macro": self.f1_macro,
            f"{prefix}/precision_macro": self.precision_macro,
            f"{prefix}/recall_macro": self.recall_macro,
        }
        if self.auroc_macro is not None:
            out[f"{prefix}/auroc_macro"] = self.auroc_macro
        return out

    def confusion_png(self, classes: Sequence[str], title: str) -> bytes:
        """The confusion matrix as PNG bytes (see ``render_confusion_png``), rendered once per classes and title."""
        key = (tuple(classes), title)
        if key not in self._confusion_pngs:
            self._confusion_pngs[key] = render_confusion_png(self.confusion, list(classes), title)
        return self._confusion_pngs[key]


def classification_report(probs: Tensor, targets: Tensor, loss: float, classes: list[str]) -> ClassificationReport:
    """Accuracy, macro P/R/F1, ROC-AUC, per-class metrics and the confusion matrix."""
    # Imported here, not at module level: torchmetrics pulls in torchvision and more (about a
    # second), which would otherwise delay every trial's first optimiser step.
    import torchmetrics.functional.classification as tmc

    num = len(classes)
    probs, targets = probs.float().cpu(), targets.cpu()
    kw = {"num_classes": num}
    precision = tmc.multiclass_precision(probs, targets, average="none", **kw)
    recall = tmc.multiclass_recall(probs, targets, average="none", **kw)
    f1 = tmc.multiclass_f1_score(probs, targets, average="none", **kw)
    support = torch.bincount(targets, minlength=num)
    present = support > 0  # macro averages over classes that occur in this split
    auroc: float | None = None
    if int(present.sum()) == num:
        auroc = float(tmc.multiclass_auroc(probs, targets, average="macro", **kw))
    return ClassificationReport(
        acc=float(tmc.multiclass_accuracy(probs, targets, average="micro", **kw)),
        loss=loss,
        f1_macro=float(f1[present].mean()),
        precision_macro=float(precision[present].mean()),
        recall_macro=float(recall[present].mean()),
        auroc_macro=auroc,
        per_class={
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "acc": float(recall[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(classes)
        },
        confusion=tmc.multiclass_confusion_matrix(probs, targets, **kw),
    )


def macro_f1(probs: Tensor, targets: Tensor, num_classes: int) -> float:
    """Macro F1 over the classes present in ``targets``: the per-epoch part of the full report."""
    import torchmetrics.functional.classification as tmc

    f1 = tmc.multiclass_f1_score(probs.float().cpu(), targets.cpu(), num_classes=num_classes, average="none")
    present = torch.bincount(targets.cpu(), minlength=num_classes) > 0
    return float(f1[present].mean())


def per_class_auroc(probs: Tensor, targets: Tensor, num_classes: int) -> list[float]:
    """One-vs-rest ROC-AUC of each class, in class order."""
    import torchmetrics.functional.classification as tmc

    auroc = tmc.multiclass_auroc(probs.float().cpu(), targets.cpu(), num_classes=num_classes, average="none")
    return auroc.tolist()


def curve_thresholds(num_classes: int, max_points: int) -> int:
    """Thresholds per class for ROC/PR curves, 11 to 201, so that all classes' points fit in ``max_points``."""
    return max(11, min(201, max_points // max(num_classes, 1) - 1))


def roc_points(probs: Tensor, targets: Tensor, classes: list[str], thresholds: int) -> CurvePoints:
    """Per-class ROC curves as (class, fpr, tpr) at ``thresholds`` evenly spaced thresholds.

    Binned thresholds keep the cost and the size fixed, whatever the number of samples.
    """
    import torchmetrics.functional.classification as tmc

    fpr, tpr, _ = tmc.multiclass_roc(
        probs.float().cpu(), targets.cpu(), num_classes=len(classes), thresholds=thresholds
    )
    return _curve_points(classes, fpr, tpr)


def pr_points(probs: Tensor, targets: Tensor, classes: list[str], thresholds: int) -> CurvePoints:
    """Per-class precision-recall curves as (class, recall, precision) at ``thresholds`` thresholds."""
    import torchmetrics.functional.classification as tmc

    precision, recall, _ = tmc.multiclass_precision_recall_curve(
        probs.float().cpu(), targets.cpu(), num_classes=len(classes), thresholds=thresholds
    )
    return _curve_points(classes, recall, precision)


def _curve_points(classes: list[str], xs: Tensor, ys: Tensor) -> CurvePoints:
    """(class, x, y) rounded to 4 decimals; NaN points (thresholds where nothing was predicted) dropped."""
    points = []
    for c, name in enumerate(classes):
        for x, y in zip(xs[c].tolist(), ys[c].tolist(), strict=True):
            if x == x and y == y:
                points.append((name, round(x, 4), round(y, 4)))
    return points


def render_confusion_png(confusion: Tensor, classes: list[str], title: str = "confusion matrix") -> bytes:
    """Draw the confusion matrix (row-normalised colours, counts as text) as PNG bytes, in memory."""
    # Imported here: matplotlib takes most of a second to import, and only the end of a run draws.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = confusion.numpy()
    rows = counts.sum(axis=1, keepdims=True).clip(min=1)
    size = max(4.0, 0.45 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(counts / rows, cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(classes))
    ax.set_xticks(ticks, classes, rotation=90 if len(classes) > 10 else 0)
    ax.set_yticks(ticks, classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if len(classes) <= 30:
        for i in ticks:
            for j in ticks:
                ax.text(
                    j,
                    i,
                    int(counts[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if counts[i, j] / rows[i, 0] > 0.5 else "black",
                )
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()
