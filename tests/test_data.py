"""Data-source contracts: shapes, splits and class counts for every source."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from flexcnn.config import load_config
from flexcnn.data import ImageTensors, StreamedImages, Target, available_sources, load_splits
from flexcnn.data.augment import PRESETS, BatchTransform
from flexcnn.data.fer_csv import write_fer_csv
from flexcnn.data.folders import write_image_folder
from flexcnn.data.loaders import make_loader
from flexcnn.data.stats import channel_stats
from flexcnn.data.torchvision_sets import write_idx
from flexcnn.errors import DataError


def _data(*overrides: str):
    return load_config(None, list(overrides)).data


def _sizes(splits) -> tuple[int, int, int]:
    return len(splits.train), len(splits.val), len(splits.test) if splits.test is not None else 0


def test_digits_shapes_and_stratified_splits() -> None:
    splits = load_splits(_data("data.source=digits"))
    assert splits.train.images.shape[1:] == (1, 8, 8)
    assert splits.num_classes == 10
    assert sum(_sizes(splits)) == 1797
    # 10% test, then 10% of the rest for val, stratified: every class in every split
    assert _sizes(splits) == (1455, 162, 180)
    for name in ("train", "val", "test"):
        assert min(splits.class_counts(name)) > 0
    assert int(splits.train.images.max()) == 255  # 0..16 scaled to 0..255


def test_splits_are_seeded_and_disjoint() -> None:
    a = load_splits(_data("data.source=digits"))
    b = load_splits(_data("data.source=digits"))
    c = load_splits(_data("data.source=digits", "data.split_seed=1"))
    assert torch.equal(a.val.images, b.val.images)
    assert not torch.equal(a.val.images, c.val.images)
    flat = lambda s: {bytes(img.numpy()) for img in s.images}  # noqa: E731
    assert not flat(a.train) & flat(a.test)


def test_mnist5k_is_real_mnist() -> None:
    splits = load_splits(_data("data.source=mnist5k"))
    assert _sizes(splits) == (4050, 450, 500)
    assert splits.train.images.shape[1:] == (1, 28, 28)
    assert splits.class_counts("train") == [405] * 10
    assert splits.class_counts("test") == [50] * 10


def test_imagefolder_with_val_and_test(tmp_path: Path) -> None:
    write_image_folder(tmp_path, {"cat": 6, "dog": 4, "owl": 5}, splits=("train", "val", "test"))
    splits = load_splits(_data("data.source=imagefolder", f"data.root={tmp_path}", "data.image_size=16"))
    assert splits.classes == ["cat", "dog", "owl"]
    assert _sizes(splits) == (15, 15, 15)
    assert isinstance(splits.train, ImageTensors)
    assert splits.train.images.shape[1:] == (3, 16, 16)
    assert splits.class_counts("train") == [6, 4, 5]


def test_imagefolder_without_val_splits_train_stratified(tmp_path: Path) -> None:
    write_image_folder(tmp_path, {"a": 20, "b": 10})
    splits = load_splits(
        _data("data.source=imagefolder", f"data.root={tmp_path}", "data.val_fraction=0.2", "data.channels=1")
    )
    assert _sizes(splits) == (24, 6, 0)
    assert splits.class_counts("val") == [4, 2]
    assert splits.train.images.shape[1] == 1
    assert splits.image_size == 64  # the folder default when nobody asks for a size


def test_imagefolder_streams_when_over_the_memory_budget(tmp_path: Path) -> None:
    write_image_folder(tmp_path, {"a": 5, "b": 5}, splits=("train", "val"))
    splits = load_splits(
        _data("data.source=imagefolder", f"data.root={tmp_path}", "data.resident=never", "data.image_size=12")
    )
    assert isinstance(splits.train, StreamedImages)
    image, label = splits.train[0]
    assert image.shape == (3, 12, 12) and image.dtype == torch.uint8 and label == 0
    loader = make_loader(
        splits.train, batch_size=4, device=torch.device("cpu"), train=False, resident=False, num_workers=0
    )
    assert sum(len(y) for _, y in loader) == 10


def test_model_request_sets_folder_size_and_channels(tmp_path: Path) -> None:
    write_image_folder(tmp_path, {"a": 3, "b": 3}, mode="L")
    splits = load_splits(_data("data.source=imagefolder", f"data.root={tmp_path}"), Target(channels=3, image_size=24))
    assert splits.train.images.shape[1:] == (3, 24, 24)


def test_mixed_modes_decode_to_one_shape(tmp_path: Path) -> None:
    write_image_folder(tmp_path, {"a": 3}, mode="L")
    write_image_folder(tmp_path, {"b": 3}, mode="RGBA", seed=1)
    write_image_folder(tmp_path, {"c": 3}, mode="P", seed=2)
    splits = load_splits(_data("data.source=imagefolder", f"data.root={tmp_path}", "data.image_size=10"))
    assert splits.classes == ["a", "b", "c"]
    assert torch.cat([splits.train.images, splits.val.images]).shape == (9, 3, 10, 10)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("empty_class", "has no images"),
        ("no_train", "has no train/ folder"),
        ("mismatch", "different classes"),
        ("single_class", "at least 2"),
        ("missing_root", "does not exist"),
    ],
)
def test_imagefolder_layout_mistakes(tmp_path: Path, damage: str, message: str) -> None:
    root = tmp_path / "data"
    if damage == "empty_class":
        write_image_folder(root, {"a": 3, "b": 3})
        (root / "train" / "empty").mkdir()
        (root / "train" / "empty" / "notes.txt").write_text("not an image")
    elif damage == "no_train":
        write_image_folder(root, {"a": 3, "b": 3}, splits=("val",))
    elif damage == "mismatch":
        write_image_folder(root, {"a": 3, "b": 3}, splits=("train",))
        write_image_folder(root, {"a": 3, "c": 3}, splits=("val",))
    elif damage == "single_class":
        write_image_folder(root, {"only": 6}, splits=("train", "val"))
    with pytest.raises(DataError, match=message):
        load_splits(_data("data.source=imagefolder", f"data.root={root}", "data.image_size=8"))


def test_corrupt_image_is_named_or_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_image_folder(tmp_path, {"a": 5, "b": 5})
    bad = tmp_path / "train" / "b" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    truncated = tmp_path / "train" / "a" / "truncated.png"
    truncated.write_bytes((tmp_path / "train" / "a" / "0.png").read_bytes()[:40])
    with pytest.raises(DataError, match=r"broken\.jpg|truncated\.png") as err:
        load_splits(_data("data.source=imagefolder", f"data.root={tmp_path}", "data.image_size=8"))
    assert "skip_corrupt" in str(err.value)
    with caplog.at_level(logging.WARNING):
        splits = load_splits(
            _data("data.source=imagefolder", f"data.root={tmp_path}", "data.image_size=8", "data.skip_corrupt=true")
        )
    assert len(splits.train) + len(splits.val) == 10
    assert "broken.jpg" in caplog.text and "truncated.png" in caplog.text


def test_fer_csv_uses_usage_column(tmp_path: Path) -> None:
    path = write_fer_csv(tmp_path / "fer.csv", {"Training": 21, "PublicTest": 7, "PrivateTest": 14})
    splits = load_splits(_data("data.source=fer2013_csv", f"data.root={path}"))
    assert _sizes(splits) == (21, 7, 14)
    assert splits.train.images.shape[1:] == (1, 48, 48)
    assert splits.classes[3] == "happy" and splits.num_classes == 7


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("label,pixels,Usage\n0,1 2,Training\n", "missing emotion"),
        ("emotion,pixels,Usage\n0,1 2 3,Training\n", "has 3 values, expected 2304"),
        ("emotion,pixels,Usage\n9," + " ".join(["0"] * 2304) + ",Training\n", "emotion '9'"),
        ("emotion,pixels,Usage\n1," + " ".join(["0"] * 2304) + ",Holdout\n", "Usage 'Holdout'"),
    ],
)
def test_fer_csv_mistakes_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "fer.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        load_splits(_data("data.source=fer2013_csv", f"data.root={path}"))


def test_torchvision_mnist_reads_placed_files(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 60), ("t10k", 20)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    splits = load_splits(_data("data.source=mnist", f"data.root={tmp_path}"))
    assert _sizes(splits) == (50, 10, 20)  # at least one val image per class
    assert splits.train.images.shape[1:] == (1, 28, 28)
    assert splits.num_classes == 10


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn", "fashionmnist", "fer2013"])
def test_torchvision_sets_offline_name_the_files(tmp_path: Path, name: str) -> None:
    with pytest.raises(DataError) as err:
        load_splits(_data(f"data.source={name}", f"data.root={tmp_path}"))
    assert str(tmp_path) in str(err.value) and "place" in str(err.value)


def test_every_source_is_listed() -> None:
    assert {
        "digits",
        "mnist5k",
        "imagefolder",
        "fer2013_csv",
        "cifar10",
        "cifar100",
        "mnist",
        "fashionmnist",
        "svhn",
        "fer2013",
    } <= set(available_sources())


def test_limit_caps_training_images() -> None:
    splits = load_splits(_data("data.source=digits", "data.limit=100"))
    assert len(splits.train) == 100


def test_channel_stats_match_numpy() -> None:
    splits = load_splits(_data("data.source=digits"))
    mean, std = channel_stats(splits.train, 1)
    pixels = splits.train.images.numpy().astype(np.float64) / 255
    assert mean[0] == pytest.approx(pixels.mean(), rel=1e-6)
    assert std[0] == pytest.approx(pixels.std(), rel=1e-6)
    mean3, _ = channel_stats(splits.train, 3)
    assert len(mean3) == 3


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_augmentation_keeps_shape_only_on_training_batches(preset: str) -> None:
    images = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    transform = BatchTransform(
        in_channels=1, out_channels=3, in_size=28, out_size=32, mean=(0.5,) * 3, std=(0.5,) * 3, preset=preset
    )
    evaluated = transform(images, train=False)
    assert evaluated.shape == (8, 3, 32, 32)
    assert torch.equal(evaluated, transform(images, train=False))  # eval is deterministic
    augmented = transform(images, train=True, generator=torch.Generator().manual_seed(0))
    assert augmented.shape == (8, 3, 32, 32)
    if preset != "none":
        assert not torch.allclose(augmented, evaluated)
    again = transform(images, train=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(augmented, again)  # seeded
