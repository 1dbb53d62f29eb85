"""Decoding image files to fixed-size uint8 tensors, with errors that name the file."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from flexcnn.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
# Refuse decompression bombs instead of swallowing gigabytes per file.
Image.MAX_IMAGE_PIXELS = 20_000 * 20_000


def decode_image(path: Path, size: int, channels: int) -> torch.Tensor:
    """Read ``path`` as a uint8 tensor (channels, size, size).

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
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as exc:
        raise CorruptImage(path, exc) from None
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


class CorruptImage(DataError):
    """An image file that cannot be decoded."""

    def __init__(self, path: Path, cause: BaseException) -> None:
        super().__init__(
            f"cannot decode image {path}: {cause}. Remove or replace the file, "
            "or set data.skip_corrupt=true to skip unreadable images with a warning"
        )
        self.path = path
