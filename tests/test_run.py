"""run() contracts: the run folder, metrics, checkpoints, stopping, resuming."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from flexcnn.config import load_config
from flexcnn.errors import TrainingDiverged
from flexcnn.reporters.base import Reporter, RunInfo, RunResult, StopRun
from flexcnn.run import run
from tests.conftest import REPO, TINY


class Recorder(Reporter):
    """Keeps what it was told, and can stop or interrupt at a given epoch."""

    def __init__(self, stop_at: int | None = None, interrupt_at: int | None = None) -> None:
        self.info: RunInfo | None = None
        self.epochs: list[dict[str, float]] = []
        self.result: RunResult | None = None
        self.stop_at, self.interrupt_at = stop_at, interrupt_at

    def on_start(self, info: RunInfo) -> None:
        self.info = info

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.epochs.append(metrics)
        if epoch == self.stop_at:
            raise StopRun("pruned", "told to stop")
        if epoch == self.interrupt_at:
            raise KeyboardInterrupt

    def on_end(self, result: RunResult) -> None:
        self.result = result


def test_run_writes_a_reproducible_folder(tmp_path: Path) -> None:
    rec = Recorder()
    result = run(load_config(None, TINY), [rec], run_dir=tmp_path)
    assert result.status == "completed"
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "summary.json",
        "per_class.json",
        "confusion.png",
        "roc.json",
        "best.pt",
        "last.pt",
    ):
        assert (tmp_path / name).is_file(), name
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for key in ("train/loss", "train/acc", "val/loss", "val/acc", "lr", "epoch_seconds", "images_per_second"):
        assert all(key in r for r in rows)
    summary = json.loads((tmp_path / "summary.json").read_text())
    for key in (
        "test/acc",
        "test/f1_macro",
        "test/precision_macro",
        "test/recall_macro",
        "test/acc/7",
        "best/val/acc",
        "params/total",
        "status",
    ):
        assert key in summary, key
    assert summary["best/val/acc"] == max(r["val/acc"] for r in rows)
    # the reporter saw the same numbers the files hold
    assert [m["val/acc"] for m in rec.epochs] == [r["val/acc"] for r in rows]
    assert rec.result is result and rec.info is not None and rec.info.train_size == 1455
    # checkpoints load with weights_only=True and carry the resolved config
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["config"]["model"]["num_filters"] == [8, 16]
    assert load_config(tmp_path / "config.yaml") == load_config(None, TINY)
    assert result.report is not None and int(result.report.confusion.sum()) == 180


def test_confusion_matrix_matches_accuracy(tmp_path: Path) -> None:
    result = run(load_config(None, TINY), run_dir=tmp_path)
    assert result.report is not None
    confusion = result.report.confusion
    assert float(confusion.diag().sum() / confusion.sum()) == pytest.approx(result.summary["test/acc"], abs=1e-6)


@pytest.mark.slow
def test_demo_config_reaches_97_percent_on_digits(tmp_path: Path) -> None:
    result = run(load_config(REPO / "configs" / "demo-digits.yaml", ["logging.progress=false"]), run_dir=tmp_path)
    assert result.summary["test/acc"] >= 0.97


@pytest.mark.slow
def test_mnist5k_config_reaches_98_percent(tmp_path: Path) -> None:
    result = run(load_config(REPO / "configs" / "mnist5k.yaml", ["logging.progress=false"]), run_dir=tmp_path)
    assert result.summary["test/acc"] >= 0.98


def test_same_seed_same_metrics(tmp_path: Path) -> None:
    a = run(load_config(None, TINY), run_dir=tmp_path / "a")
    b = run(load_config(None, TINY), run_dir=tmp_path / "b")
    for key in ("train/loss", "val/loss", "val/acc"):
        assert [r[key] for r in a.history] == pytest.approx([r[key] for r in b.history], rel=1e-6)
    assert a.summary["test/acc"] == b.summary["test/acc"]


def test_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    overrides = [*TINY, "train.epochs=4", "data.augment=strong", "model.dense_dropout=0.3", "optim.scheduler=cosine"]
    straight = run(load_config(None, overrides), run_dir=tmp_path / "straight")
    rec = Recorder(interrupt_at=1)
    stopped = run(load_config(None, overrides), [rec], run_dir=tmp_path / "resumed")
    assert stopped.status == "interrupted" and len(stopped.history) == 2
    assert (tmp_path / "resumed" / "last.pt").is_file()
    resumed = run(load_config(None, overrides), run_dir=tmp_path / "resumed", resume=True)
    assert resumed.status == "completed"
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    for a, b in zip(straight.history, resumed.history, strict=True):
        assert a["train/loss"] == pytest.approx(b["train/loss"], rel=1e-5)
        assert a["val/acc"] == pytest.approx(b["val/acc"])
    assert straight.summary["test/acc"] == pytest.approx(resumed.summary["test/acc"])


def test_reporter_can_stop_the_run_as_pruned(tmp_path: Path) -> None:
    rec = Recorder(stop_at=0)
    result = run(load_config(None, [*TINY, "train.epochs=5"]), [rec], run_dir=tmp_path)
    assert result.status == "pruned" and result.reason == "told to stop"
    assert len(result.history) == 1
    assert "test/acc" not in result.summary  # pruned trials skip the test pass
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "pruned"


def test_early_stopping_stops_after_patience(tmp_path: Path) -> None:
    # lr so small that nothing improves after the first epoch or two
    result = run(
        load_config(
            None,
            [
                *TINY,
                "train.epochs=30",
                "train.early_stopping=2",
                "optim.lr=1e-9",
                "optim.scheduler=none",
                "train.monitor=val/loss",
            ],
        ),
        run_dir=tmp_path,
    )
    assert result.status == "early_stopped"
    assert len(result.history) < 30
    assert "test/acc" in result.summary


def test_diverging_loss_stops_with_the_reason(tmp_path: Path) -> None:
    overrides = [
        *TINY,
        "optim.name=sgd",
        "optim.lr=10",
        "optim.momentum=0.99",
        "model.batch_norm=false",
        "model.activation=elu",
        "optim.scheduler=none",
        "train.epochs=3",
    ]
    with pytest.raises(TrainingDiverged, match=r"lower optim\.lr"):
        run(load_config(None, overrides), run_dir=tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and "nan" in summary["reason"].lower() + "inf"


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd", "rmsprop"])
@pytest.mark.parametrize("scheduler", ["none", "step", "cosine", "onecycle", "plateau"])
def test_every_optimiser_and_schedule_learns(tmp_path: Path, optimizer: str, scheduler: str) -> None:
    lr = {"sgd": 0.05, "rmsprop": 1e-3}.get(optimizer, 1e-2)
    result = run(
        load_config(
            None,
            [
                *TINY,
                f"optim.name={optimizer}",
                f"optim.scheduler={scheduler}",
                f"optim.lr={lr}",
                "optim.warmup_epochs=1",
                "optim.step_size=1",
            ],
        ),
        run_dir=tmp_path,
    )
    assert result.status == "completed"
    assert result.summary["test/acc"] > 0.2  # two short epochs: clearly above chance (0.1)
    assert result.history[-1]["train/loss"] < result.history[0]["train/loss"]


@pytest.mark.parametrize(
    "extra",
    [
        ["train.loss=focal"],
        ["train.label_smoothing=0.1", "train.grad_clip=1.0"],
        ["data.class_weighting=loss"],
        ["data.class_weighting=sampler"],
        ["model.residual=true", "model.head=flatten", "model.pool=avg"],
        ["data.resident=never", "data.num_workers=0"],
        ["train.monitor=val/f1_macro"],
    ],
    ids=lambda e: e[0],
)
def test_training_options_run_and_learn(tmp_path: Path, extra: list[str]) -> None:
    result = run(load_config(None, [*TINY, *extra]), run_dir=tmp_path)
    assert result.status == "completed" and result.summary["test/acc"] > 0.3


def test_focal_loss_reduces_to_cross_entropy_at_gamma_zero() -> None:
    from flexcnn.losses import FocalLoss

    logits, target = torch.randn(16, 5), torch.randint(0, 5, (16,))
    assert FocalLoss(0.0)(logits, target) == pytest.approx(float(torch.nn.functional.cross_entropy(logits, target)))
    assert FocalLoss(2.0)(logits, target) < torch.nn.functional.cross_entropy(logits, target)
