"""Decoding image files to fixed-size uint8 tensors, with errors that name the file."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from flexcnn.errors import DataError
from flexcnn.hardware import loader_workers

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
# Refuse decompression bombs instead of swallowing gigabytes per file.
Image.MAX_IMAGE_PIXELS = 20_000 * 20_000
# Below this many files a pool of decoding processes costs more to start than it saves.
PARALLEL_MIN_FILES = 2000
_DECODE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)


def decode_array(path: Path, size: int, channels: int) -> np.ndarray:
    """Read ``path`` as a uint8 array (channels, size, size); raises ``CorruptImage``.

    JPEGs are decoded at reduced scale when the target is much smaller (PIL's
    ``draft``), which is most of the speed-up of decoding to the target size.
    """
    mode = "L" if channels == 1 else "RGB"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.draft(mode, (size, size))
                img = img.convert("RGBA").convert(mode) if img.mode == "P" else img.convert(mode)
                if img.size != (size, size):
                    img = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
                array = np.asarray(img, dtype=np.uint8)
    except _DECODE_ERRORS as exc:
        raise CorruptImage(path, exc) from None
    if array.ndim == 2:
        return array[None, :, :].copy()
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def decode_image(path: Path, size: int, channels: int) -> torch.Tensor:
    """Read ``path`` as a uint8 tensor (channels, size, size)."""
    return torch.from_numpy(decode_array(path, size, channels))


def decode_workers(n_files: int) -> int:
    """Decoding processes for ``n_files`` files: none (decode here) for small folders or <= 2 cores.

    One worker process decodes no faster than this process does, and on two
    cores it competes with training; a thread pool gained nothing on 64 px
    JPEGs (PIL's per-file Python holds the GIL); see README, "Speed".
    """
    workers = loader_workers()
    return workers if workers >= 2 and n_files >= PARALLEL_MIN_FILES else 0


def decode_files(
    files: Sequence[Path],
    out: np.ndarray,
    size: int,
    channels: int,
    *,
    stop_on_error: bool,
    workers: int | None = None,
) -> dict[int, str]:
    """Decode ``files`` into ``out`` (N, channels, size, size) row by row; return {row: error} of unreadable files.

    Unreadable rows are left as they were. With ``stop_on_error`` the first
    unreadable file (in file order) raises ``CorruptImage`` at once. ``workers``
    > 0 decodes in that many DataLoader worker processes (None: ``decode_workers``).
    """
    workers = decode_workers(len(files)) if workers is None else workers
    bad: dict[int, str] = {}
    if workers <= 0:
        for i, path in enumerate(files):
            try:
                out[i] = decode_array(path, size, channels)
            except CorruptImage as exc:
                if stop_on_error:
                    raise
                bad[i] = str(exc.__cause__ or exc.reason)
        return bad
    loader = torch.utils.data.DataLoader(
        _DecodeItems(files, size, channels),
        batch_size=64,
        num_workers=workers,
        collate_fn=functools.partial(_collate_decoded, shape=(channels, size, size)),
        prefetch_factor=4,
    )
    for index, images, errors in loader:
        rows = index.numpy()
        ok = np.array([e is None for e in errors])
        out[rows[ok]] = images.numpy()[ok]
        for row, error in zip(rows.tolist(), errors, strict=True):
            if error is None:
                continue
            if stop_on_error:
                # Decode it here again so the error is raised exactly as in the serial path.
                decode_array(files[row], size, channels)
            bad[row] = error
    return bad


class _DecodeItems(torch.utils.data.Dataset[tuple[int, np.ndarray | None, str | None]]):
    """Files decoded in worker processes; a corrupt file comes back as its error text, never raises."""

    def __init__(self, files: Sequence[Path], size: int, channels: int) -> None:
        self.files, self.size, self.channels = list(files), size, channels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, str | None]:
        try:
            return i, decode_array(self.files[i], self.size, self.channels), None
        except CorruptImage as exc:
            return i, None, str(exc.__cause__ or exc.reason)


def _collate_decoded(
    items: list[tuple[int, np.ndarray | None, str | None]], shape: tuple[int, int, int]
) -> tuple[Any, ...]:
    images = np.zeros((len(items), *shape), dtype=np.uint8)
    for k, (_, array, _) in enumerate(items):
        if array is not None:
            images[k] = array
    # Tensors travel from the worker through shared memory, not through the pipe.
    return torch.tensor([i for i, _, _ in items]), torch.from_numpy(images), [e for _, _, e in items]


class CorruptImage(DataError):
    """An image file that cannot be decoded."""

    def __init__(self, path: Path, cause: BaseException | str) -> None:
        super().__init__(
            f"cannot decode image {path}: {cause}. Remove or replace the file, "
            "or set data.skip_corrupt=true to skip unreadable images with a warning"
        )
        self.path = path
        self.reason = str(cause)


__all__ = ["IMAGE_EXTENSIONS", "CorruptImage", "decode_array", "decode_files", "decode_image"]
