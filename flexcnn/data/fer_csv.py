"""FER2013 as Kaggle ships it: one CSV of ``emotion,pixels,Usage`` rows, 48x48 grey faces, 7 emotions.

The class names live here, and ``torchvision_sets`` reads them for torchvision's
own FER2013 loader too.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flexcnn.data.base import DataSplits, ImageTensors
from flexcnn.data.sources import Target, source
from flexcnn.data.splits import stratified_split
from flexcnn.errors import DataError
from flexcnn.sections import DataConfig

FER_CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
FER_USAGE = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}


def _example(folder: Path) -> dict[str, Any]:
    """One face per emotion in each Usage (train, val, test)."""
    return {"root": write_fer_csv(folder / "fer2013.csv", dict.fromkeys(FER_USAGE, len(FER_CLASSES)))}


@source(
    "fer2013_csv",
    "FER2013 Kaggle CSV (emotion,pixels,Usage): 48x48 faces, 7 emotions",
    needs_root=True,
    example=_example,
)
def load_fer2013_csv(cfg: DataConfig, target: Target) -> DataSplits:
    """The CSV at data.root, split by its Usage column."""
    assert cfg.root is not None
    return parse_fer_csv(Path(cfg.root), cfg)


def parse_fer_csv(path: Path, cfg: DataConfig) -> DataSplits:
    """Parse a FER2013 CSV; Usage picks the split (Training/PublicTest/PrivateTest)."""
    if path.is_dir():
        raise DataError(f"data.root: {path} is a folder; fer2013_csv expects the CSV file itself (fer2013.csv)")
    if not path.is_file():
        raise DataError(f"data.root: FER2013 CSV {path} does not exist")
    rows: dict[str, tuple[list[np.ndarray], list[int]]] = {s: ([], []) for s in ("train", "val", "test")}
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            missing = {"emotion", "pixels"} - set(header)
            if missing:
                raise DataError(
                    f"{path}: FER2013 CSV must have columns emotion,pixels[,Usage]; "
                    f"missing {', '.join(sorted(missing))} (found {', '.join(header) or 'no header'})"
                )
            for line, row in enumerate(reader, start=2):
                emotion, pixels = row["emotion"], (row["pixels"] or "").split()
                if len(pixels) != 48 * 48:
                    raise DataError(f"{path}:{line}: pixels has {len(pixels)} values, expected 2304 (48x48)")
                if not emotion.isdigit() or int(emotion) >= len(FER_CLASSES):
                    raise DataError(f"{path}:{line}: emotion {emotion!r} is not an integer 0..6")
                split = FER_USAGE.get(row.get("Usage") or "Training")
                if split is None:
                    raise DataError(
                        f"{path}:{line}: Usage {row.get('Usage')!r}; expected one of {', '.join(FER_USAGE)}"
                    )
                try:
                    values = np.array(pixels, dtype=np.int64)
                except ValueError:
                    raise DataError(f"{path}:{line}: pixels must be integers 0..255") from None
                if values.min() < 0 or values.max() > 255:
                    raise DataError(f"{path}:{line}: pixels must be integers 0..255")
                rows[split][0].append(values.astype(np.uint8).reshape(1, 48, 48))
                rows[split][1].append(int(emotion))
    except UnicodeDecodeError:
        raise DataError(f"{path} is not a UTF-8 text CSV") from None
    if not rows["train"][0]:
        raise DataError(f"{path}: no Training rows")

    def tensors(split: str) -> ImageTensors | None:
        images, labels = rows[split]
        if not images:
            return None
        return ImageTensors(torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.int64))

    train, val, test = tensors("train"), tensors("val"), tensors("test")
    assert train is not None
    if val is None:
        keep, held = stratified_split(train.labels, cfg.val_fraction, cfg.split_seed)
        train, val = train.subset(keep), train.subset(held)
    return DataSplits(train, val, test, list(FER_CLASSES), channels=1, image_size=48)


def write_fer_csv(path: Path, rows_per_usage: dict[str, int], seed: int = 0) -> Path:
    """Write a FER2013 CSV of random faces, emotions in turn, ``rows_per_usage[usage]`` rows per Usage."""
    rng = np.random.default_rng(seed)
    lines = ["emotion,pixels,Usage"]
    for usage, count in rows_per_usage.items():
        for i in range(count):
            pixels = " ".join(str(v) for v in rng.integers(0, 256, 48 * 48))
            lines.append(f"{i % len(FER_CLASSES)},{pixels},{usage}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path
