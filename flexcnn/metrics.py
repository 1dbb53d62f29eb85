"""Classification metrics from predicted probabilities, computed with torchmetrics."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


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


def save_confusion_png(confusion: Tensor, classes: list[str], path: str, title: str = "confusion matrix") -> None:
    """Draw the confusion matrix (row-normalised colours, counts as text) to a PNG."""
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
    fig.savefig(path, dpi=100)
    plt.close(fig)
