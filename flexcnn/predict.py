"""Classify new images with a trained checkpoint: the run's preprocessing, precision and class names.

Each image is decoded as the training data were stored (the checkpoint's
``InputInfo``: the data set's channels and size), then goes through the same
batch transform the run validated with (channels, resize, mean/std, layout), in
the run's precision (``train.amp``/``train.channels_last`` resolved on this
machine, as ``flexcnn evaluate`` does). The model's softmax gives each image's
class and confidence, and the next ``top_k - 1`` guesses.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from flexcnn.data.decode import IMAGE_EXTENSIONS, CorruptImage, decode_image
from flexcnn.engine import autocast
from flexcnn.errors import DataError, UserError
from flexcnn.evaluate import load_model
from flexcnn.hardware import resolve_hardware
from flexcnn.pipeline import batch_transform

log = logging.getLogger(__name__)
FORMATS = ("csv", "json")


@dataclass
class Prediction:
    """One image's classes, most likely first, with their softmax confidences."""

    path: str
    top: list[tuple[str, float]]


def collect_images(inputs: Sequence[Path | str]) -> list[Path]:
    """Files as given (any name), and the images inside folders (recursively, by extension, sorted)."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise DataError(f"folder {item} holds no images (looked for {', '.join(IMAGE_EXTENSIONS)})")
            files += found
        elif item.is_file():
            files.append(item)
        else:
            raise DataError(f"{item} does not exist (expected an image file or a folder of images)")
    return files


def predict(
    checkpoint: Path | str,
    inputs: Sequence[Path | str],
    *,
    top_k: int = 1,
    batch_size: int = 64,
    skip_corrupt: bool = False,
    warn: Callable[[str], None] = log.warning,
) -> list[Prediction]:
    """Predictions for every image in ``inputs``, in order; an unreadable image fails the call
    (naming the file) or, with ``skip_corrupt``, is left out with a warning."""
    if top_k < 1 or batch_size < 1:
        raise UserError(f"--top-k and --batch-size must be at least 1, got {top_k} and {batch_size}")
    files = collect_images(inputs)
    module, config, saved = load_model(checkpoint, torch.device("cpu"))
    hw = resolve_hardware(config.train.model_copy(update={"device": "auto"}))
    module = module.to(hw.device)
    if hw.channels_last:
        module = module.to(memory_format=torch.channels_last)
    transform = batch_transform(saved.input, hw.device, channels_last=hw.channels_last)
    k = min(top_k, len(saved.classes))
    out: list[Prediction] = []
    source = (saved.input.source_size, saved.input.source_channels)  # how the training images were stored
    for paths, images in _batches(files, batch_size, *source, skip_corrupt, warn):
        with torch.no_grad(), autocast(hw.device, hw.amp_dtype):
            logits = module(transform(images, train=False))
        probs, index = logits.float().softmax(dim=1).topk(k, dim=1)
        for path, p, i in zip(paths, probs.tolist(), index.tolist(), strict=True):
            out.append(Prediction(str(path), [(saved.classes[c], conf) for c, conf in zip(i, p, strict=True)]))
    return out


def _batches(
    files: list[Path], size: int, image_size: int, channels: int, skip: bool, warn: Callable[[str], None]
) -> Iterator[tuple[list[Path], torch.Tensor]]:
    """Decoded images, ``size`` at a time, as the training data were stored (uint8, the data set's size)."""
    for start in range(0, len(files), size):
        paths, images = [], []
        for path in files[start : start + size]:
            try:
                images.append(decode_image(path, image_size, channels))
            except CorruptImage as exc:
                if not skip:
                    raise DataError(f"cannot decode image {path}: {exc.reason} (--skip-corrupt skips it)") from None
                warn(f"skipping {path}: cannot decode it ({exc.reason})")
                continue
            paths.append(path)
        if paths:
            yield paths, torch.stack(images)


def format_predictions(predictions: Sequence[Prediction], fmt: str) -> str:
    """CSV (``path,class,confidence`` then ``class_2,confidence_2,...``) or a JSON list."""
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    k = max((len(p.top) for p in predictions), default=1)
    if fmt == "json":
        rows = []
        for p in predictions:
            row: dict[str, object] = {"path": p.path, "class": p.top[0][0], "confidence": p.top[0][1]}
            if k > 1:
                row["top"] = [{"class": c, "confidence": conf} for c, conf in p.top]
            rows.append(row)
        return json.dumps(rows, indent=2) + "\n"
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["path", "class", "confidence"]
    for rank in range(2, k + 1):
        header += [f"class_{rank}", f"confidence_{rank}"]
    writer.writerow(header)
    for p in predictions:
        writer.writerow([p.path, *(x for c, conf in p.top for x in (c, f"{conf:.6f}"))])
    return buffer.getvalue()
