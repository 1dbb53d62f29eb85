"""Trial files as Optuna artifacts: each trial's ``confusion.png`` and ``best.pt``, for optuna-dashboard.

W&B's UI shows a run's confusion matrix and offers its model file; Optuna's
dashboard shows a trial's artifacts, so a trial uploads the same two files
(``optuna.artifacts.upload_artifact``) once it has finished well. The run folder
keeps its own copies; the artifact store is what the dashboard can serve.

``--artifacts`` says where:

* a folder (``FileSystemArtifactStore``); the default next to a journal or SQLite
  file is ``<file>-artifacts/`` (``optuna-journal.log-artifacts/``);
* ``s3://BUCKET`` (``Boto3ArtifactStore``; needs boto3, credentials and
  ``AWS_ENDPOINT_URL`` for S3-compatible servers the usual boto3 way);
* ``none``: no uploads.

A PostgreSQL (or MySQL) study has no "next to": there the default is none, with
a notice, until ``--artifacts`` names a folder every worker and the dashboard
can read, or a bucket.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from flexcnn.errors import UserError

if TYPE_CHECKING:
    from optuna.artifacts._protocol import ArtifactStore

    from flexcnn.search.storage import StorageSpec

log = logging.getLogger(__name__)
NONE = "none"
SUFFIX = "-artifacts"
# Uploaded for every trial that finished well (completed or early-stopped); pruned and failed
# trials have no confusion matrix, and their best.pt is not a model anyone asked for.
TRIAL_FILES = ("confusion.png", "best.pt")


@dataclass(frozen=True)
class ArtifactTarget:
    """Where a study's artifacts go: a folder, an S3 bucket, or nowhere (``note`` says why)."""

    kind: Literal["dir", "s3", "none"]
    location: str = ""  # the folder (absolute) or the bucket
    note: str = ""

    @property
    def option(self) -> str:
        """The ``--artifacts`` value that names this target from any working folder."""
        return {"dir": self.location, "s3": f"s3://{self.location}", "none": NONE}[self.kind]

    def describe(self) -> str:
        if self.kind == "dir":
            return f"folder {self.location}"
        if self.kind == "s3":
            return f"S3 bucket {self.location}"
        return "none" + (f" ({self.note})" if self.note else "")

    def open(self) -> ArtifactStore | None:
        """The Optuna artifact store, or None; UserError when it cannot be made."""
        if self.kind == "none":
            return None
        from optuna.artifacts import Boto3ArtifactStore, FileSystemArtifactStore

        if self.kind == "s3":
            return Boto3ArtifactStore(self.location)
        try:
            Path(self.location).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"--artifacts {self.location}: cannot create the folder ({exc.strerror or exc})") from None
        return FileSystemArtifactStore(self.location)


def artifact_target(option: str | None, storage: StorageSpec) -> ArtifactTarget:
    """``--artifacts`` (None: the default for ``storage``) as a target; UserError on a bad value."""
    if option is None or option == "":
        return _default(storage)
    if option == NONE:
        return ArtifactTarget("none", note="--artifacts none")
    if option.startswith("s3://"):
        bucket, _, prefix = option.removeprefix("s3://").partition("/")
        if not bucket or prefix.strip("/"):
            raise UserError(
                f"--artifacts {option}: give a bucket, s3://BUCKET; Optuna's Boto3ArtifactStore and optuna-dashboard "
                "keep artifacts at the bucket's top level, so a prefix would hide them from the dashboard"
            )
        if importlib.util.find_spec("boto3") is None:
            raise UserError(
                f"--artifacts {option}: the S3 store needs boto3, which is not installed "
                "(pip install boto3, or uv add boto3); or give a folder"
            )
        return ArtifactTarget("s3", bucket)
    if "://" in option:
        scheme = option.split("://", 1)[0]
        raise UserError(f"--artifacts {option}: unsupported scheme {scheme!r}; expected a folder, s3://BUCKET or none")
    return ArtifactTarget("dir", str(Path(option).expanduser().resolve()))


def _default(storage: StorageSpec) -> ArtifactTarget:
    path = storage.url if storage.kind == "journal" else _sqlite_file(storage.url)
    if not path:
        return ArtifactTarget(
            "none", note=f"a {storage.family} study has no folder next to it: give --artifacts DIR or s3://BUCKET"
        )
    file = Path(path).expanduser().resolve()
    return ArtifactTarget("dir", str(file.with_name(file.name + SUFFIX)))


def _sqlite_file(url: str) -> str:
    if not url.startswith("sqlite") or ":///" not in url:
        return ""
    path = url.split(":///", 1)[1]
    return "" if path in ("", ":memory:") else path


def upload_trial_files(trial: Any, run_dir: Path, store: ArtifactStore) -> list[str]:
    """Upload ``TRIAL_FILES`` that exist in ``run_dir`` to ``trial``; return the names uploaded.

    A failed upload (a full disk, an unreachable bucket) is a warning: the trial's result
    is recorded either way, and its run folder still holds the files.
    """
    from optuna.artifacts import upload_artifact

    done = []
    for name in TRIAL_FILES:
        path = Path(run_dir) / name
        if not path.is_file():
            continue
        try:
            upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial)
        except Exception as exc:
            log.warning("trial %s: could not upload %s as an Optuna artifact: %s", trial.number, path, exc)
            continue
        done.append(name)
    return done
