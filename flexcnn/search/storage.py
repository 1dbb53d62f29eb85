"""Where a study lives: a journal file, SQLite, or PostgreSQL (any SQLAlchemy URL).

* ``PATH.log`` / ``PATH.journal`` / ``journal:PATH`` -> JournalStorage on a
  JournalFileBackend: an append-only file with a lock, safe for many processes
  on one machine (and on NFS). The default is ``./optuna-journal.log``.
* ``sqlite:///PATH`` -> RDBStorage. The file is switched to WAL and connections
  wait up to a minute for a lock, so parallel workers do not hit
  "database is locked".
* ``postgresql://...`` (or ``mysql://...``) -> RDBStorage for many machines.

RDB storages get heartbeats: a trial whose worker stops beating for
``grace`` seconds is marked FAIL and re-queued (RetryHeartbeatStaleTrialCallback),
so a killed worker's trial runs again. The journal has no heartbeats; workers on
one machine instead check whether the process that owns a RUNNING trial is
still alive (``flexcnn.search.reaping``). A database that goes away is waited
for (``flexcnn.search.rdb``).

Every storage opened here carries a lock its processes share
(:func:`storage_lock`, :mod:`flexcnn.search.locks`), so any number of them may
start together on an empty storage: creating the tables, creating a study and
claiming a trial of the budget happen one process at a time.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import sqlite3
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from flexcnn.search.locks import advisory_lock, file_lock, lock_file_for
from flexcnn.search.rdb import (  # noqa: F401  StorageError, is_connection_error: re-exported
    StorageError,
    is_connection_error,
    mask_password,
    resilient_class,
)

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

DEFAULT_STORAGE = "optuna-journal.log"
RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql")
# A retried trial that keeps dying (a config that always OOMs) is not retried forever.
MAX_RETRIES = 3


@dataclass(frozen=True)
class StorageKind:
    """A kind of storage flexcnn supports: its name (:attr:`StorageSpec.family`) and how a URL of it looks."""

    name: str
    forms: str


# Every kind that messages offer and the storage contract suite (tests/contracts/test_storages.py)
# runs against. A new kind goes here, in parse_storage and open_storage, and gets a fixture there.
STORAGE_KINDS = (
    StorageKind("journal", "a journal file (PATH.log, PATH.journal or journal:PATH)"),
    StorageKind("sqlite", "sqlite:///PATH"),
    StorageKind("postgresql", "postgresql://USER@HOST/DB"),
)
FORMS = ", ".join(kind.forms for kind in STORAGE_KINDS[:-1]) + f" or {STORAGE_KINDS[-1].forms}"


@dataclass(frozen=True)
class StorageSpec:
    """A parsed storage URL."""

    kind: Literal["journal", "rdb"]
    url: str  # for journal: the file path; for rdb: the SQLAlchemy URL
    display: str  # safe to print: passwords masked

    @property
    def family(self) -> str:
        """``journal``, or the database an RDB URL names (``sqlite``, ``postgresql``, ``mysql``)."""
        return "journal" if self.kind == "journal" else self.url.split("://", 1)[0].split("+", 1)[0]

    @property
    def has_heartbeat(self) -> bool:
        return self.kind == "rdb"

    def describe(self) -> str:
        """What the storage is, for a message: ``journal file PATH`` or the URL with its password masked."""
        return self.display if self.kind == "rdb" else f"journal file {self.url}"

    def dashboard_command(self) -> str:
        """How to open optuna-dashboard on this storage."""
        target = self.url if self.kind == "journal" else self.display
        return f"optuna-dashboard {target}"


def parse_storage(url: str | None) -> StorageSpec:
    """Parse a storage URL (None -> the default journal file in the working folder)."""
    if url is None or url == "":
        url = DEFAULT_STORAGE
    if url.startswith("journal:"):
        path = url.removeprefix("journal:")
        if not path:
            raise StorageError(f"storage {url!r}: journal: needs a file path; expected {FORMS}")
        return StorageSpec("journal", path, path)
    scheme = url.split("://", 1)[0].split("+", 1)[0] if "://" in url else None
    if scheme is not None:
        if scheme not in RDB_SCHEMES:
            raise StorageError(f"storage {mask_password(url)!r}: unsupported scheme {scheme!r}; expected {FORMS}")
        if scheme == "postgres":  # SQLAlchemy only knows postgresql://
            url = "postgresql" + url[len("postgres") :]
        return StorageSpec("rdb", url, mask_password(url))
    if url.endswith((".log", ".journal")):
        return StorageSpec("journal", url, url)
    raise StorageError(f"storage {url!r} is not understood; expected {FORMS}")


def open_storage(spec: StorageSpec, *, heartbeat: int | None = None, create: bool = True) -> BaseStorage:
    """Open the storage; ``heartbeat`` seconds turns on stale-trial detection and retry (RDB only).

    ``create=False`` (status, best) refuses a journal or SQLite file that does not exist yet
    instead of creating an empty one. Any number of processes may open one empty storage at
    the same moment: the first creates Optuna's tables, the others wait for it and find them.
    """
    import optuna

    if not create:
        path = spec.url if spec.kind == "journal" else _sqlite_path(spec.url)
        if path and path != ":memory:" and not Path(path).is_file():
            raise StorageError(f"storage {spec.display}: {path} does not exist (no study has been run there)")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = _open_journal(spec) if spec.kind == "journal" else _open_rdb(spec, heartbeat)
    storage.flexcnn_lock = _lock_factory(spec, storage)  # type: ignore[attr-defined]
    return storage


def storage_lock(storage: BaseStorage, name: str) -> AbstractContextManager[None]:
    """A lock named ``name`` that every process on this storage shares (:mod:`flexcnn.search.locks`).

    Hold it for a moment (a read and a write), never for a trial. A storage not
    opened by :func:`open_storage`, or a MySQL one, has none: the block runs unlocked.
    """
    lock = getattr(storage, "flexcnn_lock", None)
    return lock(name) if lock is not None else contextlib.nullcontext()


def _lock_factory(spec: StorageSpec, storage: BaseStorage) -> Callable[[str], AbstractContextManager[None]]:
    path = spec.url if spec.kind == "journal" else _sqlite_path(spec.url)
    if path and path != ":memory:":
        # One lock file per storage file, whatever the name: the sections are short and never nested.
        return lambda _name: file_lock(lock_file_for(path))
    if spec.family == "postgresql":
        return storage.shared_lock  # type: ignore[attr-defined,no-any-return]
    return lambda _name: contextlib.nullcontext()


def _open_journal(spec: StorageSpec) -> BaseStorage:
    import optuna
    from optuna.storages.journal import JournalFileBackend

    path = Path(spec.url)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        backend = JournalFileBackend(str(path))
    except OSError as exc:
        raise StorageError(f"cannot open journal file {path}: {exc}") from None
    return optuna.storages.JournalStorage(backend)


def _open_rdb(spec: StorageSpec, heartbeat: int | None) -> BaseStorage:
    import optuna

    url = with_driver(spec.url)
    engine_kwargs: dict[str, object] = {}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": 60.0}
    else:
        engine_kwargs["pool_pre_ping"] = True  # drop connections a server restart killed
    kwargs = _heartbeat_kwargs(heartbeat) if heartbeat is not None else {}
    # What RDBStorage imports on first use (a second or so), imported before queueing for the lock;
    # alembic announces its plugins at INFO as it loads, which Optuna would have silenced first.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    import alembic.migration  # noqa: F401
    import sqlalchemy.orm  # noqa: F401

    storage_class = resilient_class()
    try:
        with _schema_lock(spec, url), warnings.catch_warnings():
            if url.startswith("sqlite"):
                _prepare_sqlite(url)
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # RDBStorage creates Optuna's tables and stamps their version: one process at a time.
            storage = storage_class(url, engine_kwargs=engine_kwargs, **kwargs)  # type: ignore[arg-type]
            storage.display = spec.display
            return storage  # type: ignore[no-any-return]
    except StorageError:
        raise
    except ImportError as exc:
        raise StorageError(f"storage {spec.display}: the database driver is not installed ({exc})") from None
    except Exception as exc:  # SQLAlchemy's OperationalError and friends: not reachable, bad credentials
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StorageError(f"cannot open storage {spec.display}: {mask_password(first)}") from None


def _heartbeat_kwargs(heartbeat: int) -> dict[str, object]:
    import optuna

    if heartbeat < 1:
        raise StorageError(f"--heartbeat must be at least 1 second, got {heartbeat}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        callback = optuna.storages.RetryHeartbeatStaleTrialCallback(
            max_retry=MAX_RETRIES, inherit_intermediate_values=True
        )
    return {
        "heartbeat_interval": heartbeat,
        # Several missed beats, not one: a busy machine can delay a beat by seconds.
        "grace_period": max(3 * heartbeat, heartbeat + 2),
        "heartbeat_stale_trial_callback": callback,
    }


@contextlib.contextmanager
def _schema_lock(spec: StorageSpec, url: str) -> Iterator[None]:
    """Serialise opening an RDB storage, which may create its tables, across processes."""
    path = _sqlite_path(url)
    if path and path != ":memory:":
        with file_lock(lock_file_for(path)):
            yield
    elif spec.family == "postgresql":
        import sqlalchemy
        from sqlalchemy.pool import NullPool

        engine = sqlalchemy.create_engine(url, poolclass=NullPool)
        try:
            with advisory_lock(engine, "schema"):
                yield
        finally:
            engine.dispose()
    else:
        yield


def with_driver(url: str) -> str:
    """Name the PostgreSQL driver that is installed.

    SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3; we ship
    psycopg2-binary, so without this every bare PostgreSQL URL would fail.
    """
    if not url.startswith("postgresql://"):
        return url
    for module, driver in (("psycopg2", "psycopg2"), ("psycopg", "psycopg")):
        if importlib.util.find_spec(module) is not None:
            return f"postgresql+{driver}://" + url.removeprefix("postgresql://")
    raise StorageError("storage postgresql://...: no PostgreSQL driver installed (psycopg2-binary or psycopg)")


def _sqlite_path(url: str) -> str:
    return url.split(":///", 1)[1] if url.startswith("sqlite") and ":///" in url else ""


def _prepare_sqlite(url: str) -> None:
    """Switch the database to WAL (persistent), so readers do not block writers."""
    path = _sqlite_path(url)
    if not path or path == ":memory:":
        return
    try:
        conn = sqlite3.connect(path, timeout=60.0)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open SQLite database {path}: {exc}") from None
