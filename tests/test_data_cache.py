"""Contracts of the decoded-image cache: it returns what decoding returns, notices changed files,
rebuilds damaged entries, survives concurrent writers, and never makes a run fail by itself."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from flexcnn.config import load_config
from flexcnn.data import load_splits
from flexcnn.data.base import ImageTensors, StreamedImages
from flexcnn.data.cache import CachedImages, _build, cache_key, decoded_images
from flexcnn.data.decode import decode_files, decode_image
from flexcnn.data.folders import write_image_folder
from flexcnn.data.loaders import make_loader
from flexcnn.errors import DataError
from flexcnn.run import run
from tests.conftest import TINY

SIZE = 12


def _splits(root: Path, *extra: str):
    return load_splits(
        load_config(None, ["data.source=imagefolder", f"data.root={root}", f"data.image_size={SIZE}", *extra]).data
    )


def _decoded(root: Path, *extra: str):
    """The same folder decoded with every cache turned off."""
    old = os.environ.get("FLEXCNN_DECODE_CACHE")
    os.environ["FLEXCNN_DECODE_CACHE"] = "0"
    try:
        return _splits(root, *extra)
    finally:
        if old is None:
            del os.environ["FLEXCNN_DECODE_CACHE"]
        else:
            os.environ["FLEXCNN_DECODE_CACHE"] = old


def _entries(cache: Path) -> list[Path]:
    return sorted(cache.glob("*.npy"))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = write_image_folder(tmp_path / "data", {"cat": 6, "dog": 5}, size=20, splits=("train", "val"))
    # A JPEG too, so the decode-at-size path (PIL draft) goes through the cache as well.
    (root / "train" / "cat" / "0.png").rename(root / "train" / "cat" / "0.tmp")
    from PIL import Image

    Image.open(root / "train" / "cat" / "0.tmp").convert("RGB").save(root / "train" / "cat" / "0.jpg", quality=90)
    (root / "train" / "cat" / "0.tmp").unlink()
    return root


def test_resident_folder_from_cache_equals_decoding_and_skips_it(folder: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    built = _splits(folder, f"data.cache_dir={cache}")
    reference = _decoded(folder)
    assert isinstance(built.train, ImageTensors)
    assert len(_entries(cache)) == 2  # one entry per split (train, val)
    for split in ("train", "val"):
        assert torch.equal(getattr(built, split).images, getattr(reference, split).images)
        assert torch.equal(getattr(built, split).labels, getattr(reference, split).labels)
    # Overwrite one image with garbage of the same length and restore its mtime: the key is
    # unchanged, so a second load that returns the original pixels did not decode.
    victim = folder / "train" / "dog" / "1.png"
    stat = victim.stat()
    victim.write_bytes(b"\0" * stat.st_size)
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    again = _splits(folder, f"data.cache_dir={cache}")
    assert torch.equal(again.train.images, reference.train.images)


def test_folders_in_memory_are_cached_by_default_unless_turned_off(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEXCNN_CACHE", str(folder.parent / "c1"))
    _splits(folder)
    assert len(_entries(folder.parent / "c1" / "decoded")) == 2
    monkeypatch.setenv("FLEXCNN_CACHE", str(folder.parent / "c2"))
    monkeypatch.setenv("FLEXCNN_DECODE_CACHE", "0")
    _splits(folder)
    assert not (folder.parent / "c2" / "decoded").exists()


def test_streamed_folder_reads_the_map_and_trains(folder: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    streamed = _splits(folder, "data.resident=never", f"data.cache_dir={cache}")
    plain = _splits(folder, "data.resident=never")
    reference = _decoded(folder)
    assert isinstance(streamed.train, CachedImages) and isinstance(streamed.train, StreamedImages)
    assert type(plain.train) is StreamedImages  # without cache_dir a streamed folder stays uncached
    for i in range(len(streamed.train)):
        image, label = streamed.train[i]
        assert torch.equal(image, reference.train.images[i]) and label == int(reference.train.labels[i])
    images, labels = streamed.train.read_batch([7, 0, 3])
    assert torch.equal(images, reference.train.images[[7, 0, 3]])
    assert labels.tolist() == reference.train.labels[[7, 0, 3]].tolist()
    # A shuffled epoch through the loader sees every image once, as whole uint8 batches.
    loader = make_loader(
        streamed.train,
        batch_size=4,
        device=torch.device("cpu"),
        train=True,
        resident=False,
        generator=torch.Generator().manual_seed(0),
    )
    seen = torch.cat([y for _, y in loader])
    assert len(loader) == 2 and len(seen) == 8 and set(seen.tolist()) <= {0, 1}
    sub = streamed.train.subset(torch.tensor([2, 5]))
    assert torch.equal(sub.read_batch([1])[0][0], reference.train.images[5])
    result = run(
        load_config(
            None,
            [
                *TINY,
                "train.epochs=1",
                "data.source=imagefolder",
                f"data.root={folder}",
                f"data.image_size={SIZE}",
                "data.resident=never",
                f"data.cache_dir={cache}",
                "data.num_workers=0",
            ],
        ),
        run_dir=tmp_path / "run",
    )
    assert result.status == "completed" and result.summary["epochs_completed"] == 1


def test_changed_added_or_removed_files_are_decoded_again(folder: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    before = _splits(folder, f"data.cache_dir={cache}")
    from PIL import Image

    changed = folder / "train" / "dog" / "2.png"
    Image.new("RGB", (20, 20), (255, 0, 255)).save(changed)
    os.utime(changed, ns=(1, 1))  # an mtime in the past: the size still differs from the old file
    after = _splits(folder, f"data.cache_dir={cache}")
    assert torch.equal(after.train.images, _decoded(folder).train.images)
    assert not torch.equal(after.train.images, before.train.images)
    (folder / "train" / "dog" / "3.png").unlink()
    write_image_folder(folder, {"cat": 7}, size=20, seed=5)  # rewrites cat/1..5.png, adds cat/0.png and 6.png
    final = _splits(folder, f"data.cache_dir={cache}")
    assert len(final.train) == len(_decoded(folder).train) == 8 + 4
    assert torch.equal(final.train.images, _decoded(folder).train.images)


def test_key_depends_on_size_channels_and_file_stats(folder: Path) -> None:
    files = sorted((folder / "train").rglob("*.*"))
    key = cache_key(files, 12, 3)
    assert key == cache_key(files, 12, 3)
    assert len({key, cache_key(files, 16, 3), cache_key(files, 12, 1), cache_key(files[:-1], 12, 3)}) == 4
    os.utime(files[0], ns=(0, 10**9))
    assert cache_key(files, 12, 3) != key


@pytest.mark.parametrize("damage", ["truncate", "flip_a_pixel", "garbage_json", "missing_json", "extra_bytes"])
def test_damaged_entries_are_rebuilt(
    folder: Path, tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    reference = _splits(folder, f"data.cache_dir={cache}")
    npy = max(_entries(cache), key=lambda p: p.stat().st_size)  # the train split's entry
    meta = npy.with_suffix(".json")
    length = npy.stat().st_size
    if damage == "truncate":
        with open(npy, "r+b") as fh:
            fh.truncate(length - 100)
    elif damage == "flip_a_pixel":
        with open(npy, "r+b") as fh:
            fh.seek(length - 7)
            byte = fh.read(1)
            fh.seek(length - 7)
            fh.write(bytes([byte[0] ^ 0xFF]))
    elif damage == "garbage_json":
        meta.write_text("{not json")
    elif damage == "missing_json":
        meta.unlink()
    else:
        with open(npy, "ab") as fh:
            fh.write(b"\0" * 64)
    with caplog.at_level(logging.WARNING, logger="flexcnn.data.cache"):
        again = _splits(folder, f"data.cache_dir={cache}")
    assert torch.equal(again.train.images, reference.train.images)
    assert npy.stat().st_size == length and json.loads(meta.read_text())["shape"][0] == len(reference.train)
    if damage in ("truncate", "flip_a_pixel", "extra_bytes"):
        assert "damaged" in caplog.text and "rebuilding" in caplog.text
    # A streamed (unverified) load of a truncated entry is rebuilt too.
    with open(npy, "r+b") as fh:
        fh.truncate(length // 2)
    streamed = _splits(folder, "data.resident=never", f"data.cache_dir={cache}")
    assert torch.equal(streamed.train.read_batch(list(range(len(streamed.train))))[0], reference.train.images)


def _race(directory: str, files: list[str], start: multiprocessing.synchronize.Barrier, locked: bool) -> None:
    paths = [Path(f) for f in files]
    start.wait()
    if locked:
        got = decoded_images(Path(directory), paths, SIZE, 3, skip_corrupt=False, verify=True, workers=0)
        assert got is not None
    else:  # no lock at all (as on a file system without flock): the renames alone must keep files whole
        _build(
            Path(directory),
            cache_key(paths, SIZE, 3),
            paths,
            (len(paths), 3, SIZE, SIZE),
            skip_corrupt=False,
            workers=0,
        )


@pytest.mark.parametrize("locked", [True, False], ids=["with-lock", "without-lock"])
def test_concurrent_writers_leave_one_whole_entry(folder: Path, tmp_path: Path, locked: bool) -> None:
    files = sorted(str(p) for p in (folder / "train").rglob("*.*"))
    cache = tmp_path / "cache"
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(4)
    procs = [ctx.Process(target=_race, args=(str(cache), files, start, locked)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert len(_entries(cache)) == 1 and not list(cache.glob(".*tmp*"))  # no temporary files left behind
    got = decoded_images(cache, [Path(f) for f in files], SIZE, 3, skip_corrupt=False, verify=True)
    assert got is not None and got.path == _entries(cache)[0]
    assert torch.equal(
        torch.from_numpy(np.array(got.images)), torch.stack([decode_image(Path(f), SIZE, 3) for f in files])
    )


def test_corrupt_images_are_remembered_and_named(
    folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    bad = folder / "train" / "dog" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DataError, match=r"broken\.jpg") as err:
        _splits(folder, f"data.cache_dir={cache}")
    assert "skip_corrupt" in str(err.value)
    assert _entries(cache) == [] and not list(cache.glob(".*tmp*"))  # nothing half-built is kept
    with caplog.at_level(logging.WARNING):
        skipped = _splits(folder, f"data.cache_dir={cache}", "data.skip_corrupt=true")
    assert len(skipped.train) == 11 and "broken.jpg" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # from the cache: still warned about, still left out
        again = _splits(folder, f"data.cache_dir={cache}", "data.skip_corrupt=true")
    assert torch.equal(again.train.images, skipped.train.images) and "broken.jpg" in caplog.text
    with pytest.raises(DataError, match=r"broken\.jpg"):  # the cache must not hide it from a strict run
        _splits(folder, f"data.cache_dir={cache}")
    streamed = _splits(folder, f"data.cache_dir={cache}", "data.skip_corrupt=true", "data.resident=never")
    assert len(streamed.train) == 11 and bad not in streamed.train.files


def test_an_unusable_cache_folder_only_warns(folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder should be")
    with caplog.at_level(logging.WARNING):
        splits = _splits(folder, f"data.cache_dir={blocked}")
    assert torch.equal(splits.train.images, _decoded(folder).train.images)
    assert "decoding without it" in caplog.text


def test_parallel_decoding_matches_serial_and_names_corrupt_files(folder: Path) -> None:
    files = sorted((folder / "train").rglob("*.*"))
    serial = np.zeros((len(files), 3, SIZE, SIZE), dtype=np.uint8)
    parallel = np.zeros_like(serial)
    assert decode_files(files, serial, SIZE, 3, stop_on_error=True, workers=0) == {}
    assert decode_files(files, parallel, SIZE, 3, stop_on_error=True, workers=2) == {}
    assert np.array_equal(serial, parallel) and serial.any()
    broken = folder / "train" / "cat" / "zz.png"
    broken.write_bytes(b"\x89PNG nothing else")
    files = sorted((folder / "train").rglob("*.*"))
    out = np.zeros((len(files), 3, SIZE, SIZE), dtype=np.uint8)
    bad = decode_files(files, out, SIZE, 3, stop_on_error=False, workers=2)
    assert list(bad) == [files.index(broken)]
    with pytest.raises(DataError, match=r"zz\.png"):
        decode_files(files, out, SIZE, 3, stop_on_error=True, workers=2)


def test_stale_temporary_files_of_crashed_writers_are_removed(folder: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    files = sorted((folder / "train").rglob("*.*"))
    key = cache_key(files, SIZE, 3)
    cache.mkdir()
    old, fresh = cache / f".{key}.1.dead.tmp.npy", cache / f".{key}.2.busy.tmp.npy"
    old.write_bytes(b"x" * 10)
    fresh.write_bytes(b"y" * 10)
    os.utime(old, (0, 0))
    assert decoded_images(cache, files, SIZE, 3, skip_corrupt=False, verify=True) is not None
    assert not old.exists() and fresh.exists()  # a fresh one may belong to a writer that is still running


def test_least_recently_used_entries_are_pruned_to_the_budget(folder: Path, tmp_path: Path) -> None:
    from flexcnn.data.cache import prune

    cache = tmp_path / "cache"
    for size in (8, 9, 10):  # three entries of the train split, at three sizes
        _splits(folder, f"data.cache_dir={cache}", f"data.image_size={size}", "data.resident=never")
    metas = {p: json.loads(p.read_text()) for p in cache.glob("*.json")}
    shapes = {p: meta["shape"] for p, meta in metas.items()}
    for meta in [p for p in metas if "/val/" in metas[p]["first_file"]]:  # keep the train split's entries only
        meta.unlink()
        meta.with_suffix(".npy").unlink()
    metas = sorted((p for p in shapes if p.exists()), key=lambda p: shapes[p][-1])
    for age, meta in zip((3, 2, 0), metas, strict=True):  # hours since last use; the 10 px one is in use now
        stamp = meta.stat().st_mtime - age * 3600
        os.utime(meta, (stamp, stamp))
    removed = prune(cache, budget=1)
    assert removed == [metas[0].with_suffix(".npy"), metas[1].with_suffix(".npy")]  # oldest first
    assert [p.exists() for p in metas] == [False, False, True]  # a recently used entry is never deleted
    assert _splits(folder, f"data.cache_dir={cache}", "data.image_size=8").train.images.shape[-1] == 8  # rebuilt
