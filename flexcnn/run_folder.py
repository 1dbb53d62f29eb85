"""The run folder's life outside its files: checked before training, claimed once, tidied on resume."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from flexcnn.config import RunConfig
from flexcnn.errors import UserError

_CHOOSE_ANOTHER = "choose another with --output-dir or logging.output_dir"


def new_run_dir(config: RunConfig) -> Path:
    """Claim a fresh folder under logging.output_dir named after the run.

    ``mkdir`` without ``exist_ok`` is the claim, so agents starting in the same
    second never share a folder; a W&B sweep run's id makes the name unique too.
    """
    root = Path(config.logging.output_dir)
    stamp = os.environ.get("WANDB_RUN_ID") or f"{datetime.now():%Y%m%d-%H%M%S}"
    name = config.logging.run_name or f"{config.model.kind.replace(':', '-')}-{config.data.source}-{stamp}"
    for n in range(1, 10_000):
        path = root / (name if n == 1 else f"{name}-{n}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
        except OSError as exc:
            raise UserError(f"cannot create the run folder {path} ({exc.strerror or exc}); {_CHOOSE_ANOTHER}") from None
    raise UserError(f"too many runs named {name!r} under {root}; set logging.run_name")


def find_wandb_run_dir(root: Path, run_id: str) -> Path | None:
    """The run folder under ``root`` that logged W&B run ``run_id`` (its ``wandb-run-id`` file), or None.

    A requeued sweep run gets the same run id and the same command line; this is how
    it finds the folder, and the last.pt, its preempted attempt left behind. When
    several match (a run restarted from scratch in a copy), the one with last.pt
    written most recently wins.
    """
    found = []
    for id_file in sorted(Path(root).glob("*/wandb-run-id")):
        try:
            if id_file.read_text().strip() == run_id:
                last = id_file.parent / "last.pt"
                found.append((last.stat().st_mtime if last.is_file() else 0.0, id_file.parent))
        except OSError:
            continue  # a folder being written or removed by another agent
    return max(found)[1] if found else None


def claim_run_dir(run_dir: Path | str | None, config: RunConfig) -> Path:
    """``run_dir``, or a new folder named after the run; either way writable, or a UserError."""
    out = Path(run_dir) if run_dir is not None else new_run_dir(config)
    ensure_writable(out)
    return out


def check_output_dir(root: Path) -> None:
    """Fail fast, creating nothing, when ``root`` (or the folder it would be made in) is not writable."""
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(
            f"cannot write the run folder under {root} ({existing} is not a writable folder); {_CHOOSE_ANOTHER}"
        )


def ensure_writable(run_dir: Path) -> None:
    """Fail before training, as a user mistake, when the run folder cannot be written."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write the run folder {run_dir} ({exc.strerror or exc}); {_CHOOSE_ANOTHER}") from None


def clear_stale_temps(run_dir: Path) -> None:
    """Remove what atomic writes a SIGKILL interrupted left behind; their targets are intact."""
    for stale in run_dir.glob(".*.tmp"):
        stale.unlink(missing_ok=True)
