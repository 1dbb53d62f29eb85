"""RDB storages: the errors they raise, and riding out a database that goes away.

A dropped connection makes Optuna's RDBStorage raise; :func:`resilient_class`
waits for the database instead (up to ``PATIENCE_SECONDS``), so a restart costs
a pause, not the study. It also gives PostgreSQL storages ``shared_lock``, the
advisory lock of :mod:`flexcnn.search.locks`, with the same patience.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import time
from collections.abc import Iterator
from typing import Any

from flexcnn.errors import UserError
from flexcnn.search.locks import release_advisory_lock, take_advisory_lock

log = logging.getLogger("flexcnn.search.storage")

# How long a worker waits for a database that went away (restart, failover, network) before it gives up.
PATIENCE_SECONDS = 300.0


class StorageError(UserError):
    """The storage URL is malformed or the storage cannot be reached."""


def mask_password(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


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


def retrying(name: str, method: Any) -> Any:
    """``method`` of a ResilientRDBStorage, waiting up to its ``patience`` while the database is unreachable."""

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


@functools.cache
def resilient_class() -> type:
    """RDBStorage's subclass that waits for the database and has ``shared_lock(name)`` (built on first use)."""
    import optuna

    class ResilientRDBStorage(optuna.storages.RDBStorage):
        """RDBStorage that waits (up to PATIENCE_SECONDS) for a database that went away.

        A retried write whose commit reached the server just before the connection
        dropped can apply twice; for trial attributes and heartbeats that is harmless.
        """

        display = "database"
        patience = PATIENCE_SECONDS
        outage = False  # one warning per outage, whichever thread (main, heartbeat) meets it first

        # A worker waits out a restart when it next takes the lock to claim a trial, too.
        take_lock = retrying("take_lock", lambda self, name: take_advisory_lock(self.engine, name))

        @contextlib.contextmanager
        def shared_lock(self, name: str) -> Iterator[None]:
            """PostgreSQL's advisory lock ``name`` (flexcnn.search.locks), for every process on this database."""
            conn = self.take_lock(name)
            try:
                yield
            finally:
                release_advisory_lock(conn)

    for name in _RETRIED:
        method = getattr(optuna.storages.RDBStorage, name, None)
        if method is not None:
            setattr(ResilientRDBStorage, name, retrying(name, method))
    return ResilientRDBStorage
