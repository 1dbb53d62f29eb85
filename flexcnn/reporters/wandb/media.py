"""A finished run's numbers as W&B media: confusion matrix (chart and image), per-class, ROC, PR and sample tables.

The numbers come from ``flexcnn.metrics``; this module only shapes them into
``wandb.Table`` / ``wandb.plot`` / ``wandb.Image`` objects. ``import wandb``
happens inside the functions: they run once, at the end of a logged run.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from flexcnn.metrics import CurvePoints, curve_thresholds, per_class_auroc, pr_points, roc_points

if TYPE_CHECKING:
    import torch

    from flexcnn.reporters.base import RunResult

# wandb.Table's row limit: ROC/PR curves are sampled at fewer thresholds for many classes.
MAX_TABLE_ROWS = 10_000
SAMPLE_MIN_PIXELS = 32  # tiny images (8x8 digits) are scaled up so the table shows them

_AXIS_TITLES = {"fpr": "False positive rate", "tpr": "True positive rate", "recall": "Recall", "precision": "Precision"}


def end_of_run_media(result: RunResult) -> dict[str, Any]:
    """Everything logged once when a run ends, by W&B key: the evaluated split's charts and tables, the samples."""
    media: dict[str, Any] = {}
    if result.report is not None and result.probs is not None and result.targets is not None:
        media.update(evaluation_media(result))
    if result.samples is not None:
        media[f"{result.eval_split}/samples"] = samples_table(result)
    return media


def evaluation_media(result: RunResult) -> dict[str, Any]:
    """Confusion matrix (chart + image), per-class table, ROC and PR curves of the evaluated split."""
    import wandb

    assert result.report is not None and result.probs is not None and result.targets is not None
    split, classes = result.eval_split, result.classes
    probs, targets = result.probs.float().cpu(), result.targets.cpu()
    media: dict[str, Any] = {
        f"{split}/confusion_matrix": wandb.plot.confusion_matrix(
            y_true=targets.tolist(),
            preds=probs.argmax(dim=1).tolist(),
            class_names=classes,
            title=f"{split} confusion matrix",
        ),
        f"{split}/confusion_matrix_image": confusion_image(result),
        f"{split}/per_class": _per_class_table(result, per_class_auroc(probs, targets, len(classes))),
    }
    thresholds = curve_thresholds(len(classes), MAX_TABLE_ROWS)  # one row per class and threshold
    roc = roc_points(probs, targets, classes, thresholds)
    pr = pr_points(probs, targets, classes, thresholds)
    media[f"{split}/roc"] = _curve(roc, "ROC", x="fpr", y="tpr", split=split)
    media[f"{split}/pr"] = _curve(pr, "Precision-recall", x="recall", y="precision", split=split)
    return media


def confusion_image(result: RunResult) -> Any:
    """The confusion matrix picture the run folder shows too, drawn from the result in memory."""
    import wandb
    from PIL import Image

    assert result.report is not None
    png = result.report.confusion_png(result.classes, title=f"{result.eval_split} confusion matrix")
    return wandb.Image(Image.open(io.BytesIO(png)))


def _per_class_table(result: RunResult, auroc: list[float]) -> Any:
    import wandb

    assert result.report is not None
    table = wandb.Table(columns=["class", "precision", "recall", "f1", "acc", "auroc", "support"])
    for i, (name, row) in enumerate(result.report.per_class.items()):
        table.add_data(name, row["precision"], row["recall"], row["f1"], row["acc"], auroc[i], row["support"])
    return table


def _curve(points: CurvePoints, title: str, *, x: str, y: str, split: str) -> Any:
    """The same chart as wandb.plot.roc_curve / pr_curve, from torchmetrics' curves.

    wandb's own helpers import pandas and scikit-learn and compute exact curves
    with a point per sample; binned thresholds keep end-of-run logging cheap.
    """
    import wandb

    table = wandb.Table(columns=["class", x, y], data=[list(point) for point in points])
    return wandb.plot.plot_table(
        "wandb/area-under-curve/v0",
        table,
        {"x": x, "y": y, "class": "class"},
        {"title": f"{split} {title} curve", "x-axis-title": _AXIS_TITLES[x], "y-axis-title": _AXIS_TITLES[y]},
    )


def samples_table(result: RunResult) -> Any:
    """Evaluated images with their true and predicted class, wrong ones first."""
    import wandb

    assert result.samples is not None
    samples, classes = result.samples, result.classes
    table = wandb.Table(columns=["image", "true", "predicted", "confidence", "correct"])
    order = sorted(range(len(samples.targets)), key=lambda i: samples.targets[i] == samples.predictions[i])
    for i in order:
        true, pred = classes[samples.targets[i]], classes[samples.predictions[i]]
        image = wandb.Image(_to_hwc(samples.images[i]), caption=f"{true} -> {pred}")
        table.add_data(image, true, pred, round(float(samples.confidences[i]), 4), true == pred)
    return table


def _to_hwc(image: torch.Tensor) -> Any:
    """uint8 (C, H, W) -> numpy (H, W[, C]), scaled up by whole pixels when tiny."""
    height, width = image.shape[-2:]
    factor = max(1, -(-SAMPLE_MIN_PIXELS // max(height, width)))
    if factor > 1:
        image = image.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)
    array = image.permute(1, 2, 0).numpy()
    return array[:, :, 0] if array.shape[2] == 1 else array
