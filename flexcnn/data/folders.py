"""Image folders: ``root/train/<class>/*.jpg`` with optional ``val/`` and ``test/``.

Images are decoded to one square size. A folder whose decoded images fit under
``data.resident_max_mb`` is decoded once into memory; a larger one streams.

Decoded images go through a cache (``flexcnn.data.cache``) so that trials
2..N of a sweep skip decoding: folders that fit in memory use it by default
(``data.cache_dir``, else ``$FLEXCNN_CACHE/decoded``; its size is bounded by
the same memory budget); streamed folders use it when ``data.cache_dir`` is
set, and then read batches from the map instead of decoding every epoch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from flexcnn.data.base import DataSplits, ImageTensors, Split, StreamedImages
from flexcnn.data.cache import CachedImages, decoded_images, default_cache_dir
from flexcnn.data.decode import IMAGE_EXTENSIONS, decode_files
from flexcnn.data.sources import Target, source
from flexcnn.data.splits import stratified_split
from flexcnn.errors import DataError
from flexcnn.sections import DataConfig

log = logging.getLogger(__name__)
DEFAULT_FOLDER_SIZE = 64  # px, when neither data.image_size nor the model asks for one


def scan_split(folder: Path) -> tuple[list[str], list[Path], list[int]]:
    """Class names, image files and labels of one split folder (class = subfolder)."""
    if not folder.is_dir():
        raise DataError(f"data.root: expected a folder of class folders at {folder}")
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{folder} has no class folders; expected {folder}/<class>/<image files>")
    files: list[Path] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        images = sorted(p for p in class_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not images:
            raise DataError(f"class folder {class_dir} has no images (looked for {', '.join(IMAGE_EXTENSIONS)})")
        files += images
        labels += [label] * len(images)
    return [p.name for p in class_dirs], files, labels


def decode_all(
    files: list[Path],
    labels: list[int],
    size: int,
    channels: int,
    *,
    skip_corrupt: bool,
    cache_dir: Path | None = None,
) -> ImageTensors:
    """Decode every file into one uint8 tensor (through the cache when given); corrupt files raise or are skipped."""
    if cache_dir is not None:
        cached = decoded_images(cache_dir, files, size, channels, skip_corrupt=skip_corrupt, verify=True)
        if cached is not None:
            rows = cached.kept_rows(files, skip_corrupt=skip_corrupt)
            return _tensors(cached.tensor(rows), [labels[i] for i in rows.tolist()])
    images = np.empty((len(files), channels, size, size), dtype=np.uint8)
    bad = decode_files(files, images, size, channels, stop_on_error=not skip_corrupt)
    for row, why in sorted(bad.items()):
        log.warning("skipping unreadable image %s (%s)", files[row], why)
    if bad:
        keep = [i for i in range(len(files)) if i not in bad]
        return _tensors(torch.from_numpy(images[keep]), [labels[i] for i in keep])
    return _tensors(torch.from_numpy(images), labels)


def _tensors(images: torch.Tensor, labels: list[int]) -> ImageTensors:
    if not labels:
        raise DataError("no readable images left after skipping corrupt files")
    return ImageTensors(images, torch.tensor(labels, dtype=torch.int64))


def stream_split(
    files: list[Path],
    labels: list[int],
    size: int,
    channels: int,
    *,
    skip_corrupt: bool,
    cache_dir: Path | None = None,
) -> StreamedImages:
    """A split decoded per item, or read per batch from the decoded-image cache when ``cache_dir`` is given."""
    if cache_dir is not None:
        cached = decoded_images(cache_dir, files, size, channels, skip_corrupt=skip_corrupt, verify=False)
        if cached is not None:
            rows = cached.kept_rows(files, skip_corrupt=skip_corrupt)
            if not len(rows):
                raise DataError("no readable images left after skipping corrupt files")
            picked = rows.tolist()
            return CachedImages(
                [files[i] for i in picked],
                [labels[i] for i in picked],
                size=size,
                channels=channels,
                cache_path=cached.path,
                rows=rows,
            )
    return StreamedImages(files, labels, size=size, channels=channels)


def _example(folder: Path) -> dict[str, Any]:
    """Three classes of six 20 px images in train/ and val/, read at 16 px."""
    root = write_image_folder(folder / "images", {"cat": 6, "dog": 6, "owl": 6}, splits=("train", "val"))
    return {"root": root, "image_size": 16}


@source(
    "imagefolder",
    "a folder with train/ (and optional val/, test/) class subfolders",
    needs_root=True,
    example=_example,
)
def load_imagefolder(cfg: DataConfig, target: Target) -> DataSplits:
    """Class folders under data.root, decoded at data.image_size (else the model's size, else 64 px)."""
    assert cfg.root is not None
    root = Path(cfg.root)
    if root.is_file():
        hint = "; for a FER2013 CSV use data.source=fer2013_csv" if root.suffix.lower() == ".csv" else ""
        raise DataError(f"data.root: {root} is a file; imagefolder expects a folder holding train/<class>/{hint}")
    if not root.is_dir():
        raise DataError(f"data.root: folder {root} does not exist")
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise DataError(f"data.root: {root} has no train/ folder; expected {root}/train/<class>/<images>")
    size = cfg.image_size or target.image_size or DEFAULT_FOLDER_SIZE
    channels = cfg.channels or target.channels or 3
    classes, files, labels = scan_split(train_dir)
    held: dict[str, tuple[list[Path], list[int]]] = {}
    for name in ("val", "test"):
        if (root / name).is_dir():
            held_classes, held_files, held_labels = scan_split(root / name)
            if held_classes != classes:
                extra = sorted(set(held_classes) - set(classes))
                missing = sorted(set(classes) - set(held_classes))
                raise DataError(
                    f"{root / name} has different classes from {train_dir}: "
                    f"extra {extra or 'none'}, missing {missing or 'none'}"
                )
            held[name] = (held_files, held_labels)
    total = len(files) + sum(len(f) for f, _ in held.values())
    resident_bytes = total * channels * size * size
    stream = cfg.resident == "never" or (cfg.resident == "auto" and resident_bytes > cfg.resident_max_mb * 2**20)

    # The cache trades disk for decoding time: bounded by the memory budget for folders
    # held in memory, so it is on by default there; a streamed folder may be any size.
    cache_dir = cfg.cache_dir if cfg.cache_dir is not None else (None if stream else default_cache_dir())

    def make(split_files: list[Path], split_labels: list[int]) -> Split:
        if stream:
            return stream_split(
                split_files, split_labels, size, channels, skip_corrupt=cfg.skip_corrupt, cache_dir=cache_dir
            )
        return decode_all(split_files, split_labels, size, channels, skip_corrupt=cfg.skip_corrupt, cache_dir=cache_dir)

    train = make(files, labels)
    val = make(*held["val"]) if "val" in held else None
    test = make(*held["test"]) if "test" in held else None
    if val is None:
        keep, out = stratified_split(train.targets, cfg.val_fraction, cfg.split_seed)
        train, val = train.subset(keep), train.subset(out)
    return DataSplits(train, val, test, classes, channels=channels, image_size=size)


def write_image_folder(
    root: Path,
    classes: dict[str, int],
    *,
    size: int = 20,
    splits: tuple[str, ...] = ("train",),
    mode: str = "RGB",
    seed: int = 0,
) -> Path:
    """Write ``root/<split>/<class>/<i>.png`` with class-dependent colours (learnable)."""
    rng = np.random.default_rng(seed)
    for split in splits:
        for c, (name, count) in enumerate(classes.items()):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                base = np.full((size, size, 3), 40 + 60 * c, dtype=np.int16)
                noise = rng.integers(-20, 20, size=(size, size, 3))
                array = np.clip(base + noise, 0, 255).astype(np.uint8)
                Image.fromarray(array, "RGB").convert(mode).save(folder / f"{i}.png")
    return root
