"""``flexcnn predict``: new images through a trained checkpoint, as the run saw its own.

Two small models are trained here: one on digits (grayscale 8x8; its test
images saved as PNG must be classified exactly as the model classifies the
test tensors), and one on an RGB image folder with named classes (names in the
output, other sizes and modes of input resized and converted as in training).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flexcnn.config import validate_config
from flexcnn.data import Target, load_splits
from flexcnn.data.folders import write_image_folder
from flexcnn.evaluate import load_model
from flexcnn.pipeline import batch_transform
from flexcnn.run import run
from tests.helpers import flexcnn_cli

LOGGING = {"progress": False, "wandb": {"mode": "disabled", "num_samples": 0}}


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str], torch.Tensor]:
    """A trained digits run folder, PNGs of 40 test images, their names and the model's own probabilities."""
    folder = tmp_path_factory.mktemp("predict-digits")
    config = validate_config(
        {
            "model": {"kind": "flexible_cnn", "num_filters": [8, 16], "dense_units": [32]},
            "data": {"source": "digits", "augment": "none", "hflip": False},
            "optim": {"name": "adam", "lr": 0.01, "scheduler": "none"},
            "train": {"epochs": 3, "seed": 0, "threads": 1},
            "logging": {**LOGGING, "output_dir": str(folder / "runs")},
        }
    )
    result = run(config, run_dir=folder / "run")
    splits = load_splits(config.data, Target(1, 8))
    images = splits.test.images[:40]
    names = []
    (folder / "images" / "nested").mkdir(parents=True)
    for i, image in enumerate(images):
        name = f"images/{'nested/' if i % 3 == 0 else ''}{i:02d}.png"
        Image.fromarray(image[0].numpy(), "L").save(folder / name)
        names.append(name)
    # The model on the same tensors: what the predictions must equal.
    module, _, saved = load_model(result.run_dir / "best.pt", torch.device("cpu"))
    transform = batch_transform(saved.input, torch.device("cpu"))
    with torch.no_grad():
        probs = module(transform(images, train=False)).float().softmax(dim=1)
    return result.run_dir, folder, names, probs


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_predictions_match_the_model_on_its_own_preprocessing(digits_model: tuple) -> None:
    run_dir, folder, names, probs = digits_model
    out = flexcnn_cli("predict", str(run_dir / "best.pt"), "images", cwd=folder)
    assert out.returncode == 0, out.stderr
    rows = {row["path"]: row for row in _rows(out.stdout)}
    assert sorted(rows) == sorted(names)  # the nested folder is searched too
    for name, p in zip(names, probs, strict=True):
        row = rows[name]
        assert row["class"] == str(int(p.argmax()))  # digits' class names are "0".."9"
        assert float(row["confidence"]) == pytest.approx(float(p.max()), abs=2e-6)
    assert list(_rows(out.stdout)[0]) == ["path", "class", "confidence"]


def test_json_top_k_and_output_file(digits_model: tuple) -> None:
    run_dir, folder, names, probs = digits_model
    target = folder / "out" / "predictions.json"
    out = flexcnn_cli("predict", str(run_dir), names[0], names[1], "--top-k", "3", "-o", str(target), cwd=folder)
    assert out.returncode == 0, out.stderr
    assert "wrote 2 prediction(s)" in out.stderr and out.stdout == ""
    rows = json.loads(target.read_text())  # .json -> JSON without --format
    assert [row["path"] for row in rows] == names[:2]
    for row, p in zip(rows, probs[:2], strict=True):
        top = torch.topk(p, 3)
        assert [t["class"] for t in row["top"]] == [str(int(i)) for i in top.indices]
        assert [t["confidence"] for t in row["top"]] == pytest.approx(top.values.tolist(), abs=2e-6)
        assert row["class"] == row["top"][0]["class"] and row["confidence"] == row["top"][0]["confidence"]
    wide = flexcnn_cli("predict", str(run_dir), names[0], "--top-k", "50", "--format", "csv", cwd=folder)
    assert wide.returncode == 0 and len(_rows(wide.stdout)[0]) == 3 + 2 * 9  # capped at the 10 classes


def test_unreadable_and_missing_inputs_are_named(digits_model: tuple, tmp_path: Path) -> None:
    run_dir, folder, names, _ = digits_model
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    failed = flexcnn_cli("predict", str(run_dir), names[0], str(broken), cwd=folder)
    assert failed.returncode == 2 and failed.stdout == ""
    assert f"cannot decode image {broken}" in failed.stderr and "--skip-corrupt" in failed.stderr
    skipped = flexcnn_cli("predict", str(run_dir), names[0], str(broken), "--skip-corrupt", cwd=folder)
    assert skipped.returncode == 0, skipped.stderr
    assert f"warning: skipping {broken}" in skipped.stderr
    assert [row["path"] for row in _rows(skipped.stdout)] == [names[0]]
    missing = flexcnn_cli("predict", str(run_dir), str(tmp_path / "nope.png"), cwd=folder)
    assert missing.returncode == 2 and "nope.png does not exist" in missing.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = flexcnn_cli("predict", str(run_dir), str(empty), cwd=folder)
    assert nothing.returncode == 2 and "holds no images" in nothing.stderr
    not_a_checkpoint = flexcnn_cli("predict", str(broken), names[0], cwd=folder)
    assert not_a_checkpoint.returncode == 2 and f"checkpoint {broken}" in not_a_checkpoint.stderr


def test_class_names_and_inputs_of_other_sizes_and_modes(tmp_path: Path) -> None:
    classes = {"cat": 24, "dog": 24, "owl": 24}
    root = write_image_folder(tmp_path / "data", classes, size=20, seed=0)
    config = validate_config(
        {
            "model": {"kind": "flexible_cnn", "num_filters": [8], "dense_units": [16]},
            "data": {"source": "imagefolder", "root": str(root), "image_size": 16, "augment": "none", "batch_size": 8},
            "optim": {"name": "adam", "lr": 0.01, "scheduler": "none"},
            "train": {"epochs": 4, "seed": 0, "threads": 1},
            "logging": {**LOGGING, "output_dir": str(tmp_path / "runs")},
        }
    )
    result = run(config, run_dir=tmp_path / "run")
    assert result.summary["val/acc"] >= 0.9
    new = write_image_folder(tmp_path / "new", {name: 2 for name in classes}, size=40, seed=7)
    big = sorted((new / "train").rglob("*.png"))
    grey = tmp_path / "grey.png"  # a grayscale file for an RGB model: converted as decoding converts it
    Image.open(big[0]).convert("L").save(grey)
    out = flexcnn_cli("predict", str(result.run_dir), str(new), "--format", "json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert {row["class"] for row in rows} <= set(classes)
    right = [row["class"] == Path(row["path"]).parent.name for row in rows]
    assert sum(right) >= 5, rows  # 6 new images at twice the training size
    assert all(0 < row["confidence"] <= 1 for row in rows)
    one = flexcnn_cli("predict", str(result.run_dir), str(grey))
    assert one.returncode == 0 and _rows(one.stdout)[0]["class"] in classes
    assert np.asarray(Image.open(grey)).ndim == 2
