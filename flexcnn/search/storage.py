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
still alive (``flexcnn.search.reaping``).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import re
import sqlite3
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from flexcnn.errors import UserError

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

log = logging.getLogger(__name__)

DEFAULT_STORAGE = "optuna-journal.log"
# How long a worker waits for a database that went away (restart, failover, network) before it gives up.
PATIENCE_SECONDS = 300.0
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


class StorageError(UserError):
    """The storage URL is malformed or the storage cannot be reached."""


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


def mask_password(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def open_storage(spec: StorageSpec, *, heartbeat: int | None = None, create: bool = True) -> BaseStorage:
    """Open the storage; ``heartbeat`` seconds turns on stale-trial detection and retry (RDB only).

    ``create=False`` (status, best) refuses a journal or SQLite file that does not exist yet
    instead of creating an empty one.
    """
    import optuna

    if not create:
        path = spec.url if spec.kind == "journal" else _sqlite_path(spec.url)
        if path and path != ":memory:" and not Path(path).is_file():
            raise StorageError(f"storage {spec.display}: {path} does not exist (no study has been run there)")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if spec.kind == "journal":
        from optuna.storages.journal import JournalFileBackend

        path = Path(spec.url)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            backend = JournalFileBackend(str(path))
        except OSError as exc:
            raise StorageError(f"cannot open journal file {path}: {exc}") from None
        return optuna.storages.JournalStorage(backend)

    url = with_driver(spec.url)
    engine_kwargs: dict[str, object] = {}
    if url.startswith("sqlite"):
        _prepare_sqlite(url)
        engine_kwargs["connect_args"] = {"timeout": 60.0}
    else:
        engine_kwargs["pool_pre_ping"] = True  # drop connections a server restart killed
    kwargs: dict[str, object] = {}
    if heartbeat is not None:
        if heartbeat < 1:
            raise StorageError(f"--heartbeat must be at least 1 second, got {heartbeat}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            callback = optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=MAX_RETRIES, inherit_intermediate_values=True
            )
        kwargs = {
            "heartbeat_interval": heartbeat,
            # Several missed beats, not one: a busy machine can delay a beat by seconds.
            "grace_period": max(3 * heartbeat, heartbeat + 2),
            "heartbeat_stale_trial_callback": callback,
        }
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = _resilient_class()(url, engine_kwargs=engine_kwargs, **kwargs)  # type: ignore[arg-type]
            storage.display = spec.display
            return storage
    except ImportError as exc:
        raise StorageError(f"storage {spec.display}: the database driver is not installed ({exc})") from None
    except Exception as exc:  # SQLAlchemy's OperationalError and friends: not reachable, bad credentials
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StorageError(f"cannot open storage {spec.display}: {mask_password(first)}") from None


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
    """Create the folder and switch the database to WAL (persistent), so readers do not block writers."""
    path = _sqlite_path(url)
    if not path or path == ":memory:":
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(path, timeout=60.0)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open SQLite database {path}: {exc}") from None


# --------------------------------------------------------------------------- riding out database outages

# RDBStorage methods that touch the database. A dropped connection makes them raise;
# the resilient storage waits for the database instead, so a restart costs a pause, not the study.
_RETRIED = (
    "create_new_study",
    "delete_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_trial_user_attrs",
    "get_trial_system_attrs",
    "get_all_studies",
    "create_new_trial",
    "set_trial_param",
    "get_trial_param",
    "set_trial_state_values",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_trial_id_from_study_id_trial_number",
    "get_trial",
    "get_all_trials",
    "get_best_trial",
    "record_heartbeat",
    "_get_stale_trial_ids",
)


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is the database being unreachable, not a bad request."""
    import sqlalchemy.exc as sa

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sa.OperationalError | sa.InterfaceError | sa.DisconnectionError):
            return True  # includes SQLite's "database is locked": waiting is the cure there too
        if isinstance(current, sa.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, sa.PendingRollbackError):
            return True
        current = current.__cause__ or current.__context__
    return False


@functools.cache
def _resilient_class() -> type:
    import optuna

    class ResilientRDBStorage(optuna.storages.RDBStorage):
        """RDBStorage that waits (up to PATIENCE_SECONDS) for a database that went away.

        A retried write whose commit reached the server just before the connection
        dropped can apply twice; for trial attributes and heartbeats that is harmless.
        """

        display = "database"
        patience = PATIENCE_SECONDS
        outage = False  # one warning per outage, whichever thread (main, heartbeat) meets it first

    def retrying(name: str, method: Any) -> Any:
        @functools.wraps(method)
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            started, delay, warned = time.monotonic(), 0.5, False
            while True:
                try:
                    result = method(self, *args, **kwargs)
                except Exception as exc:
                    if not is_connection_error(exc):
                        raise
                    waited = time.monotonic() - started
                    if waited >= self.patience:
                        if name == "record_heartbeat":
                            return None  # a missed beat; never kill the heartbeat thread with a traceback
                        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                        raise StorageError(
                            f"storage {self.display} unreachable for {waited:.0f} s ({mask_password(first)})"
                        ) from None
                    if not warned and not self.outage:
                        log.warning("storage %s unreachable; waiting up to %.0f s for it", self.display, self.patience)
                        warned = self.outage = True
                    time.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                if warned:
                    log.warning("storage %s reachable again after %.0f s", self.display, time.monotonic() - started)
                    self.outage = False
                return result

        return call

    for name in _RETRIED:
        method = getattr(optuna.storages.RDBStorage, name, None)
        if method is not None:
            setattr(ResilientRDBStorage, name, retrying(name, method))
    return ResilientRDBStorage
