"""How to open a flexcnn study with Optuna's own tools: optuna-dashboard and the ``optuna`` CLI.

Our ``--storage`` takes forms those tools do not: ``journal:PATH`` is flexcnn's
own, and neither tool knows it (optuna-dashboard refuses it, and both create an
empty file literally named ``journal:PATH`` when told it is a journal file with
``--storage-class``). Relative paths only work from the folder the study was
started in, and a bare ``postgresql://`` URL means psycopg 3 to SQLAlchemy 2.1,
which flexcnn does not ship. So for each storage we print the form they accept:

* journal file: its absolute path (both tools take an existing file that is not
  SQLite as a journal file);
* SQLite: ``sqlite:////ABSOLUTE/PATH``;
* PostgreSQL: the URL with its driver, ``postgresql+psycopg2://USER@HOST/DB``.

tests/test_optuna_tools.py runs the installed tools on each form.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from flexcnn.search.artifacts import ArtifactTarget
from flexcnn.search.storage import StorageSpec, with_driver


@dataclass(frozen=True)
class ToolForms:
    """The storage as Optuna's tools take it, and the command lines to paste."""

    url: str
    dashboard: str
    optuna_cli: str
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [f"dashboard: {self.dashboard}", f"optuna CLI: {self.optuna_cli}", *self.notes]


def optuna_storage_url(spec: StorageSpec) -> str:
    """The storage as optuna-dashboard and ``optuna --storage`` accept it, from any folder.

    Passwords stay masked (``***``): put the real one in, or leave it out and set PGPASSWORD.
    """
    if spec.kind == "journal":
        return str(Path(spec.url).expanduser().resolve())
    if spec.family == "sqlite" and ":///" in spec.url:
        path = spec.url.split(":///", 1)[1]
        if path and path != ":memory:":
            return "sqlite:///" + str(Path(path).expanduser().resolve())
        return spec.url
    return with_driver(spec.display) if spec.display.startswith("postgresql://") else spec.display


def tool_forms(spec: StorageSpec, artifacts: ArtifactTarget | None = None) -> ToolForms:
    """What to paste to look at this storage with optuna-dashboard and the ``optuna`` CLI."""
    url = optuna_storage_url(spec)
    quoted = shlex.quote(url)
    dashboard = f"optuna-dashboard {quoted}"
    notes = []
    if artifacts is not None and artifacts.kind == "dir":
        dashboard += f" --artifact-dir {shlex.quote(artifacts.location)}"
    elif artifacts is not None and artifacts.kind == "none" and "--artifacts none" not in artifacts.note:
        notes.append(f"artifacts: none uploaded ({artifacts.note})")
    elif artifacts is not None and artifacts.kind == "s3":
        dashboard += " --from-config dashboard.toml"
        notes.append(f'dashboard.toml: [artifact_store.boto3] bucket_name = "{artifacts.location}"')
    if "***" in url:
        notes.append("the password is masked: put it in place of ***, or leave it out and set PGPASSWORD")
    return ToolForms(url, dashboard, f"optuna studies --storage {quoted}", notes)
