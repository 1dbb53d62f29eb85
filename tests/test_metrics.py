"""flexcnn.metrics (torchmetrics underneath) against scikit-learn's independent implementations."""

from __future__ import annotations

import itertools

import pytest
import torch
from sklearn import metrics as sk

from flexcnn.metrics import classification_report, curve_thresholds, per_class_auroc, pr_points, roc_points

CLASSES = ["cat", "dog", "bird", "fish"]


def _predictions(n: int = 400, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities that lean towards the true class (so metrics are neither 0 nor 1), and the targets."""
    gen = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, len(CLASSES), (n,), generator=gen)
    logits = torch.randn(n, len(CLASSES), generator=gen)
    logits[torch.arange(n), targets] += 1.5
    return logits.softmax(dim=1), targets


def test_report_matches_scikit_learn() -> None:
    probs, targets = _predictions()
    report = classification_report(probs, targets, loss=0.5, classes=CLASSES)
    y, pred = targets.numpy(), probs.argmax(dim=1).numpy()
    precision, recall, f1, support = sk.precision_recall_fscore_support(y, pred, zero_division=0)

    assert report.acc == pytest.approx(sk.accuracy_score(y, pred))
    assert report.f1_macro == pytest.approx(f1.mean(), abs=1e-6)
    assert report.precision_macro == pytest.approx(precision.mean(), abs=1e-6)
    assert report.recall_macro == pytest.approx(recall.mean(), abs=1e-6)
    assert report.auroc_macro == pytest.approx(sk.roc_auc_score(y, probs.numpy(), multi_class="ovr"), abs=1e-4)
    assert report.confusion.tolist() == sk.confusion_matrix(y, pred).tolist()
    for i, name in enumerate(CLASSES):
        row = report.per_class[name]
        assert row["precision"] == pytest.approx(precision[i], abs=1e-6)
        assert row["recall"] == row["acc"] == pytest.approx(recall[i], abs=1e-6)
        assert row["f1"] == pytest.approx(f1[i], abs=1e-6)
        assert row["support"] == support[i]
    assert report.scalars("test")["test/loss"] == 0.5


def test_a_class_missing_from_the_split_leaves_the_macro_averages_and_has_no_auroc() -> None:
    probs, targets = _predictions()
    keep = targets != 3  # no fish in this split
    report = classification_report(probs[keep], targets[keep], loss=0.0, classes=CLASSES)
    y, pred = targets[keep].numpy(), probs[keep].argmax(dim=1).numpy()
    _, recall, _, _ = sk.precision_recall_fscore_support(y, pred, labels=[0, 1, 2], zero_division=0)
    assert report.recall_macro == pytest.approx(recall.mean(), abs=1e-6)  # over the 3 classes present
    assert report.auroc_macro is None and "test/auroc_macro" not in report.scalars("test")
    assert report.per_class["fish"]["support"] == 0


def test_per_class_auroc_and_curves_match_scikit_learn() -> None:
    probs, targets = _predictions()
    y = targets.numpy()
    aurocs = per_class_auroc(probs, targets, len(CLASSES))
    for i, value in enumerate(aurocs):
        assert value == pytest.approx(sk.roc_auc_score(y == i, probs[:, i].numpy()), abs=1e-4)

    thresholds = curve_thresholds(len(CLASSES), max_points=1000)
    assert thresholds == 201 and curve_thresholds(100, 1000) == 11  # 11..201 points per class
    roc = roc_points(probs, targets, CLASSES, thresholds)
    for i, name in enumerate(CLASSES):
        points = sorted((x, yv) for cls, x, yv in roc if cls == name)
        assert points[0] == (0.0, 0.0) and points[-1] == (1.0, 1.0)
        # The area under the binned curve is close to the exact AUROC.
        area = sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in itertools.pairwise(points))
        assert area == pytest.approx(aurocs[i], abs=0.01)
    pr = pr_points(probs, targets, CLASSES, thresholds)
    assert {cls for cls, _, _ in pr} == set(CLASSES)
    assert all(0.0 <= x <= 1.0 and 0.0 <= yv <= 1.0 for _, x, yv in pr)
