"""A cache of decoded, resized uint8 images in memory-mapped ``.npy`` files.

A sweep decodes the same image folder at the same size in every trial, and for
small images decoding costs more than training on them. The first trial writes
the decoded images of a split to ``<cache_dir>/<key>.npy`` (N, C, S, S) uint8
with ``<key>.json`` beside it; trials 2..N map that file instead of decoding.

The key hashes each file's absolute path, byte size and mtime, the target size
and channel count, the Pillow version and this module's format number, so an
edited, added or removed image (or another size) gives a new key and a fresh
decode; stale entries are never read.

Writing is safe against crashes and concurrent trials: a writer holds an
advisory lock on ``<key>.lock`` (a second trial starting at the same moment
waits, then maps the first one's file), decodes into a temporary file in the
same folder, fsyncs and ``os.replace``s it, and writes the JSON last. The JSON
holds the shape and a CRC-32 of the pixels and is the commit marker: an entry
without it, of the wrong length or (when verified) with the wrong checksum is
rebuilt. The cache is an optimisation: when its folder cannot be written, a
warning says so and the images are decoded as if there were none.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import secrets
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from flexcnn.data.base import StreamedImages
from flexcnn.data.decode import CorruptImage, decode_files

log = logging.getLogger(__name__)
FORMAT = 1
STALE_SECONDS = 6 * 3600  # a temporary file this old is a crashed writer's
_CRC_CHUNK = 64 * 2**20  # bytes checksummed per call: bounded memory, GIL released by zlib


def default_cache_dir() -> Path | None:
    """``$FLEXCNN_CACHE/decoded`` (``~/.cache/flexcnn/decoded``); None when ``FLEXCNN_DECODE_CACHE=0``."""
    if os.environ.get("FLEXCNN_DECODE_CACHE", "1").strip().lower() in ("0", "off", "false", "no"):
        return None
    return Path(os.environ.get("FLEXCNN_CACHE", Path.home() / ".cache" / "flexcnn")) / "decoded"


def cache_key(files: Sequence[Path], size: int, channels: int) -> str:
    """A hash of the files (path, bytes, mtime) and the decoding target; changes when any of them does."""
    import PIL

    digest = hashlib.sha256(f"flexcnn-decoded/{FORMAT}/{size}/{channels}/pillow-{PIL.__version__}\n".encode())
    for path in files:
        stat = os.stat(path)
        digest.update(f"{os.path.abspath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


@dataclass
class DecodedImages:
    """One cache entry: a read-only map of the decoded images and the rows that could not be decoded."""

    path: Path
    images: np.ndarray  # (N, C, S, S) uint8, memory-mapped
    bad: dict[int, str]  # row -> why its file could not be decoded (kept as zeros)

    def kept_rows(self, files: Sequence[Path], *, skip_corrupt: bool) -> np.ndarray:
        """Rows to use: all readable ones; an unreadable file raises unless ``skip_corrupt`` (then a warning)."""
        if self.bad and not skip_corrupt:
            row = min(self.bad)
            raise CorruptImage(files[row], self.bad[row])
        for row in sorted(self.bad):
            log.warning("skipping unreadable image %s (%s)", files[row], self.bad[row])
        keep = np.ones(len(self.images), dtype=bool)
        keep[list(self.bad)] = False
        return np.flatnonzero(keep)

    def tensor(self, rows: np.ndarray) -> Tensor:
        """The images of ``rows`` copied into memory as one uint8 tensor."""
        if len(rows) == len(self.images):
            return torch.from_numpy(np.array(self.images))
        return torch.from_numpy(self.images[rows])


def decoded_images(
    directory: Path,
    files: Sequence[Path],
    size: int,
    channels: int,
    *,
    skip_corrupt: bool,
    verify: bool,
    workers: int | None = None,
) -> DecodedImages | None:
    """The cache entry of ``files`` at this size, decoding and writing it first when missing or damaged.

    ``verify`` checks the pixels' checksum (reads the whole file; right for
    splits that are about to be copied into memory anyway). An unreadable
    image raises ``CorruptImage`` unless ``skip_corrupt``. Returns None, with
    a warning, when ``directory`` cannot be used.
    """
    directory = Path(directory)
    try:
        key = cache_key(files, size, channels)
    except OSError:
        return None  # a file vanished since the folder was listed: decoding will name it
    shape = (len(files), channels, size, size)
    found = _open(directory, key, shape, verify=verify)
    if found is not None:
        return found
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with _locked(directory / f"{key}.lock"):
            # Another trial may have written it while this one waited for the lock.
            found = _open(directory, key, shape, verify=verify, quiet=True)
            if found is not None:
                return found
            return _build(directory, key, files, shape, skip_corrupt=skip_corrupt, workers=workers)
    except OSError as exc:
        log.warning("cannot use the decoded-image cache in %s (%s); decoding without it", directory, exc)
        return None


class CachedImages(StreamedImages):
    """A streamed split whose items are read from a decoded-image cache file instead of being decoded."""

    def __init__(
        self, files: list[Path], labels: list[int], *, size: int, channels: int, cache_path: Path, rows: np.ndarray
    ) -> None:
        super().__init__(files, labels, size=size, channels=channels)
        self.cache_path = Path(cache_path)
        self.rows = np.asarray(rows, dtype=np.int64)
        self._array: np.ndarray | None = None

    def _images(self) -> np.ndarray:
        # Opened lazily, so each DataLoader worker maps the file itself.
        if self._array is None:
            self._array = np.load(self.cache_path, mmap_mode="r")
        return self._array

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_array"] = None
        return state

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return torch.from_numpy(np.array(self._images()[self.rows[index]])), int(self.labels[index])

    def read_batch(self, index: Sequence[int]) -> tuple[Tensor, Tensor]:
        """Images (B, C, S, S) and labels (B,) of ``index``, read from the map in file order."""
        picked = np.asarray(index, dtype=np.int64)
        rows = self.rows[picked]
        order = np.argsort(rows, kind="stable")  # ascending offsets: sequential reads when not in page cache
        images = np.empty((len(rows), self.channels, self.size, self.size), dtype=np.uint8)
        images[order] = self._images()[rows[order]]
        return torch.from_numpy(images), self.labels[torch.from_numpy(picked)]

    def subset(self, index: Tensor) -> CachedImages:
        picked = index.tolist()
        return CachedImages(
            [self.files[i] for i in picked],
            [int(self.labels[i]) for i in picked],
            size=self.size,
            channels=self.channels,
            cache_path=self.cache_path,
            rows=self.rows[np.asarray(picked, dtype=np.int64)],
        )


# ------------------------------------------------------------------ reading and writing entries


def _paths(directory: Path, key: str) -> tuple[Path, Path]:
    return directory / f"{key}.npy", directory / f"{key}.json"


def _open(
    directory: Path, key: str, shape: tuple[int, ...], *, verify: bool, quiet: bool = False
) -> DecodedImages | None:
    array_path, meta_path = _paths(directory, key)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # absent (or half-written by a crashed writer): build it
    problem = ""
    try:
        if meta.get("format") != FORMAT or meta.get("key") != key or tuple(meta.get("shape", ())) != shape:
            problem = "its header does not match"
        else:
            images = np.load(array_path, mmap_mode="r")
            if images.shape != shape or images.dtype != np.uint8:
                problem = f"it holds {images.dtype} {images.shape}"
            elif images.offset + images.nbytes != array_path.stat().st_size:
                problem = "its length is wrong"
            elif verify and _crc32(images) != meta.get("crc32"):
                problem = "its checksum does not match"
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        problem = f"it cannot be read ({exc})"
    if problem:
        if not quiet:
            log.warning("decoded-image cache %s is damaged (%s); rebuilding it", array_path, problem)
        return None
    bad = {int(row): str(why) for row, why in meta.get("bad", {}).items()}
    with contextlib.suppress(OSError):
        os.utime(meta_path)  # marks it used, for prune()
    return DecodedImages(array_path, images, bad)


def _build(
    directory: Path,
    key: str,
    files: Sequence[Path],
    shape: tuple[int, int, int, int],
    *,
    skip_corrupt: bool,
    workers: int | None,
) -> DecodedImages:
    array_path, meta_path = _paths(directory, key)
    directory.mkdir(parents=True, exist_ok=True)
    _remove_stale(directory, key)
    tmp = directory / f".{key}.{os.getpid()}.{secrets.token_hex(4)}.tmp.npy"
    try:
        images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        _reserve(tmp)
        bad = decode_files(files, images, shape[2], shape[1], stop_on_error=not skip_corrupt, workers=workers)
        images.flush()
        crc = _crc32(images)
        del images
        _fsync(tmp)
        meta_path.unlink(missing_ok=True)  # readers must never pair the new pixels with an old header
        os.replace(tmp, array_path)
        from flexcnn.checkpoint import atomic_write_json

        atomic_write_json(
            meta_path,
            {
                "format": FORMAT,
                "key": key,
                "shape": list(shape),
                "crc32": crc,
                "bad": {str(row): why for row, why in sorted(bad.items())},
                "first_file": str(os.path.abspath(files[0])),
            },
        )
    finally:
        tmp.unlink(missing_ok=True)
    log.info("decoded %d images into the cache %s", shape[0], array_path)
    prune(directory, keep=key)
    return DecodedImages(array_path, np.load(array_path, mmap_mode="r"), bad)


def cache_budget_bytes() -> int:
    """The most the cache folder may hold: ``$FLEXCNN_DECODE_CACHE_GB`` (default 20) GiB."""
    try:
        return int(float(os.environ.get("FLEXCNN_DECODE_CACHE_GB", "20")) * 2**30)
    except ValueError:
        return 20 * 2**30


def prune(directory: Path, *, keep: str = "", budget: int | None = None, idle_seconds: float = 3600) -> list[Path]:
    """Delete least recently used entries until the folder fits ``budget``; return what was deleted.

    Edited folders leave entries under old keys behind, so without this the
    cache would only grow. Entries used in the last ``idle_seconds`` (a trial
    may still be reading them) and ``keep`` are never deleted.
    """
    budget = cache_budget_bytes() if budget is None else budget
    entries = []
    for meta in directory.glob("*.json"):
        array = meta.with_suffix(".npy")
        try:
            entries.append((meta.stat().st_mtime, array.stat().st_size if array.exists() else 0, meta, array))
        except OSError:
            continue
    total = sum(size for _, size, _, _ in entries)
    removed: list[Path] = []
    now = time.time()
    for used, size, meta, array in sorted(entries, key=lambda e: e[0]):
        if total <= budget:
            break
        if meta.stem == keep or now - used < idle_seconds:
            continue
        with contextlib.suppress(OSError):
            meta.unlink()
            array.unlink(missing_ok=True)
            meta.with_suffix(".lock").unlink(missing_ok=True)
            total -= size
            removed.append(array)
    if removed:
        log.info("decoded-image cache %s: removed %d least recently used entries", directory, len(removed))
    return removed


def _remove_stale(directory: Path, key: str) -> None:
    """Delete temporary files of ``key`` left by writers that crashed hours ago.

    Only old ones: where advisory locks do not work, a file of this age
    cannot belong to a writer that is still running, a fresh one might.
    """
    now = time.time()
    for stale in directory.glob(f".{key}.*.tmp.npy"):
        with contextlib.suppress(OSError):
            if now - stale.stat().st_mtime > STALE_SECONDS:
                stale.unlink()


def _crc32(images: np.ndarray) -> int:
    flat = images.reshape(-1)
    crc = 0
    for start in range(0, flat.size, _CRC_CHUNK):
        crc = zlib.crc32(flat[start : start + _CRC_CHUNK], crc)
    return crc


def _reserve(path: Path) -> None:
    """Allocate the file's blocks now: a full disk is then an OSError here, not a SIGBUS mid-decode."""
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    finally:
        os.close(fd)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (none where fcntl is missing: renames keep files whole)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
