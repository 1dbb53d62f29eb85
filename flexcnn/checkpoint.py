"""Checkpoints and run-folder files, written atomically and loaded safely.

Every file is written to a temporary name in the same folder, flushed, then
renamed over the target, so a kill mid-write leaves the previous version, never
a torn file. Checkpoints hold only tensors and plain data and are loaded with
``weights_only=True``: a checkpoint that carries code is refused.

``Checkpoint`` is the layout of best.pt and last.pt (format 1): what run()
writes, resumes from and evaluate.py rebuilds a model from.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch

from flexcnn.errors import CheckpointError

FORMAT_VERSION = 1


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` via a temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file 0600; a run folder on a shared machine is as readable as any new file.
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once: os.umask can only be read by setting it


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Save a checkpoint dict (tensors and plain data only) atomically."""

    def write(fh: IO[bytes]) -> None:
        try:
            torch.save({"format": FORMAT_VERSION, **state}, fh)
        except RuntimeError as exc:
            # A failed write (full disk, `ulimit -f`) surfaces as a RuntimeError from closing torch's
            # zip writer; the OSError it hides is the real cause, and run() records it as StorageFull.
            if isinstance(exc.__context__, OSError):
                raise exc.__context__ from None
            raise

    atomic_write(path, write)


def safe_torch_load(path: Path, map_location: str | torch.device = "cpu", *, what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` with a clear CheckpointError for every way a file can be bad.

    ``what`` names the file in messages (``checkpoint``, ``model.weights: file``).
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"refusing {what} {path}: it holds objects other than tensors and plain data "
            f"(possibly code), and is only loaded with weights_only=True ({str(exc).splitlines()[0]})"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, IndexError, KeyError, TypeError) as exc:
        # A file that is not a torch archive at all (text, another format) fails deep inside the
        # unpickler with whatever error its first bytes happen to provoke.
        raise CheckpointError(f"{what} {path} is corrupt or truncated: {type(exc).__name__}: {exc}") from None


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a flexcnn checkpoint with ``weights_only=True``; clear errors for bad files."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                path = path / name
                break
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (expected best.pt or last.pt in a run folder)")
    state = safe_torch_load(path, map_location)
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION or "model" not in state:
        raise CheckpointError(f"{path} is not a flexcnn checkpoint (no 'format'={FORMAT_VERSION} and 'model')")
    return state


@dataclass(frozen=True)
class InputInfo:
    """What the model sees, and what the data it was trained on looked like before the batch transform."""

    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source_channels: int  # the data set's own channels and size, which the transform converts from
    source_size: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "channels": self.channels,
            "image_size": self.image_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "source_channels": self.source_channels,
            "source_size": self.source_size,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputInfo:
        return cls(
            channels=data["channels"],
            image_size=data["image_size"],
            mean=tuple(data["mean"]),
            std=tuple(data["std"]),
            source_channels=data["source_channels"],
            source_size=data["source_size"],
        )


@dataclass
class ResumeState:
    """The parts of last.pt that only resuming needs: training continues exactly where it stopped."""

    optimizer: dict[str, Any]
    schedule: dict[str, Any]
    early_stopping: dict[str, Any]
    scaler: dict[str, Any]  # empty when the run used no gradient scaler
    rng: dict[str, Any]  # torch, loader and augment generator states (and cuda on a GPU)

    def to_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer,
            "schedule": self.schedule,
            "early_stopping": self.early_stopping,
            "scaler": self.scaler,
            "rng": self.rng,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResumeState:
        return cls(
            optimizer=data["optimizer"],
            schedule=data["schedule"],
            early_stopping=data["early_stopping"],
            scaler=data.get("scaler") or {},
            rng=data["rng"],
        )


@dataclass
class Checkpoint:
    """A flexcnn checkpoint: best.pt has ``metrics`` (the epoch it was best at), last.pt has ``resume``."""

    model: dict[str, Any]  # the module's state_dict
    epoch: int  # epochs completed
    config: dict[str, Any]  # the resolved RunConfig as a dict
    classes: list[str]
    input: InputInfo
    metrics: dict[str, float] | None = None
    resume: ResumeState | None = None

    def to_dict(self) -> dict[str, Any]:
        """The dict ``save_checkpoint`` writes (it adds ``format``); keys in the order format 1 has them."""
        state: dict[str, Any] = {
            "model": self.model,
            "epoch": self.epoch,
            "config": self.config,
            "classes": self.classes,
            "input": self.input.to_dict(),
        }
        if self.metrics is not None:
            state["metrics"] = self.metrics
        if self.resume is not None:
            state.update(self.resume.to_dict())
        return state

    @classmethod
    def from_dict(cls, state: dict[str, Any], *, source: Path | str = "checkpoint") -> Checkpoint:
        """The checkpoint in ``state`` (as ``load_checkpoint`` returns it); ``source`` names it in errors."""
        try:
            return cls(
                model=state["model"],
                epoch=int(state["epoch"]),
                config=state["config"],
                classes=list(state["classes"]),
                input=InputInfo.from_dict(state["input"]),
                metrics=state.get("metrics"),
                resume=ResumeState.from_dict(state) if "optimizer" in state else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            missing = f"{type(exc).__name__}: {exc}"
            raise CheckpointError(f"{source} is not a complete flexcnn checkpoint ({missing})") from None

    @classmethod
    def load(cls, path: Path | str, map_location: str | torch.device = "cpu") -> Checkpoint:
        """``load_checkpoint`` (a run folder names its best.pt), as a typed Checkpoint."""
        return cls.from_dict(load_checkpoint(path, map_location), source=path)
