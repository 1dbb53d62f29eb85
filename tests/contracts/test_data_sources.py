"""Data-source contract, run against every registered source (a new source file is picked up as it registers).

Each registration carries an ``example`` that writes a tiny copy in the
source's own on-disk format (or nothing, for data embedded in a package); the
contract runs on it with no network. Sources whose files are checksummed
downloads (CIFAR, SVHN, FER2013 via torchvision) cannot be faked: for them the
contract is a DataError that names data.root when the files are missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from flexcnn.config import load_config, validate_config
from flexcnn.data import DataSplits, ImageTensors, available_sources, load_splits
from flexcnn.data.base import Split
from flexcnn.data.sources import SourceEntry, source_entries
from flexcnn.errors import ConfigError, DataError

ENTRIES = source_entries()
WITH_EXAMPLE = [e for e in ENTRIES if e.example is not None]
WITHOUT_EXAMPLE = [e for e in ENTRIES if e.example is None]
SPLITS = ("train", "val", "test")


@dataclass
class Example:
    """A source, the data-config fields that read its example, and the splits loaded from them."""

    entry: SourceEntry
    fields: dict[str, Any]
    splits: DataSplits

    def load(self, **extra: Any) -> DataSplits:
        return _load(self.entry, {**self.fields, **extra})


def _load(entry: SourceEntry, fields: dict[str, Any]) -> DataSplits:
    return load_splits(validate_config({"data": {"source": entry.name, **fields}}).data)


@pytest.fixture(scope="module", params=WITH_EXAMPLE, ids=lambda e: e.name)
def example(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Example:
    entry: SourceEntry = request.param
    assert entry.example is not None
    fields = entry.example(tmp_path_factory.mktemp(entry.name))
    return Example(entry, fields, _load(entry, fields))


def _splits(splits: DataSplits) -> dict[str, Split]:
    return {name: getattr(splits, name) for name in SPLITS if getattr(splits, name) is not None}


def _images(split: Split) -> torch.Tensor:
    if isinstance(split, ImageTensors):
        return split.images
    return torch.stack([split[i][0] for i in range(len(split))])


def _fingerprints(split: Split) -> list[bytes]:
    return [bytes(image.numpy()) for image in _images(split)]


def test_images_are_uint8_chw_of_the_announced_shape_and_labels_int64(example: Example) -> None:
    splits = example.splits
    assert len(splits.train) > 0 and len(splits.val) > 0
    shape = (splits.channels, splits.image_size, splits.image_size)
    assert splits.channels in (1, 3)
    for name, split in _splits(splits).items():
        images = _images(split)
        assert images.dtype == torch.uint8, name
        assert tuple(images.shape) == (len(split), *shape), name
        assert split.targets.dtype == torch.int64 and tuple(split.targets.shape) == (len(split),), name
        if not isinstance(split, ImageTensors):  # streamed: each item is (image, int label)
            image, label = split[0]
            assert tuple(image.shape) == shape and isinstance(label, int)


def test_splits_share_no_image(example: Example) -> None:
    # The examples and the embedded sets hold no duplicate images, so an image in two
    # splits means one item landed in both.
    seen: dict[bytes, str] = {}
    for name, split in _splits(example.splits).items():
        for fingerprint in _fingerprints(split):
            assert fingerprint not in seen, f"an image is in both {seen[fingerprint]} and {name}"
            seen[fingerprint] = name


def test_class_names_match_labels_and_every_class_trains(example: Example) -> None:
    splits = example.splits
    assert splits.num_classes >= 2
    assert len(set(splits.classes)) == len(splits.classes) == splits.num_classes
    assert all(isinstance(name, str) and name for name in splits.classes)
    for name, split in _splits(splits).items():
        labels = split.targets
        assert int(labels.min()) >= 0 and int(labels.max()) < splits.num_classes, name
    assert min(splits.class_counts("train")) > 0, "a class has no training image"


def test_limit_caps_training_images_and_keeps_val_and_test(example: Example) -> None:
    limit = max(1, len(example.splits.train) // 2)
    limited = example.load(limit=limit)
    assert len(limited.train) == limit
    assert set(_fingerprints(limited.train)) <= set(_fingerprints(example.splits.train))
    for name in ("val", "test"):
        full, capped = getattr(example.splits, name), getattr(limited, name)
        assert (full is None) == (capped is None)
        if full is not None:
            assert _fingerprints(capped) == _fingerprints(full), name


def test_same_split_seed_gives_the_same_splits(example: Example) -> None:
    again = example.load()
    for name, split in _splits(example.splits).items():
        other = getattr(again, name)
        assert torch.equal(_images(split), _images(other)), name
        assert torch.equal(split.targets, other.targets), name
    assert again.classes == example.splits.classes


@pytest.mark.parametrize("entry", WITHOUT_EXAMPLE, ids=lambda e: e.name)
def test_source_without_files_fails_with_a_data_error_naming_the_root(entry: SourceEntry, tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        _load(entry, {"root": tmp_path, "download": False})
    assert str(tmp_path) in str(err.value)


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_every_source_is_a_config_choice_and_listed(entry: SourceEntry, tmp_path: Path) -> None:
    assert available_sources()[entry.name] == entry.description
    assert validate_config({"data": {"source": entry.name, "root": tmp_path}}).data.source == entry.name
    if entry.needs_root:
        with pytest.raises(ConfigError, match=f"data.root is required for source '{entry.name}'"):
            validate_config({"data": {"source": entry.name}})


def test_unknown_source_fails_at_load_time_listing_every_source() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["data.source=no_such_source"])
    message = str(err.value)
    assert "data.source" in message and "no_such_source" in message
    for entry in ENTRIES:
        assert repr(entry.name) in message
