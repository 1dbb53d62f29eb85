"""Locks that every process on one storage shares, for the few steps that must not interleave.

Workers and agents start together on an empty storage (``docker compose up``, a
Kubernetes indexed Job), and without these they race: two processes creating
Optuna's tables at once fail with ``duplicate key value violates unique
constraint "pg_type_typname_nsp_index"`` (SQLite: ``table studies already
exists``), two creating one study each store their settings, and two looking at
the trial budget at once both start the last trial. Under a lock the loser
waits a moment and then finds the tables, the study or the full budget.

* PostgreSQL: a transaction-level advisory lock (``pg_advisory_xact_lock``),
  keyed by a hash of the lock's name. It lives on the server, so it works
  across machines, and it goes away with the transaction: a worker that dies
  holding it (SIGKILL, lost connection) cannot leave it behind.
* A journal file or an SQLite database: ``flock`` on a file next to it,
  ``PATH.flexcnn-lock``; the kernel drops it when its process dies. (The
  journal's own ``PATH.lock`` belongs to Optuna.)

Each lock is held for milliseconds: a read and a write, never a trial.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlalchemy

LOCK_SUFFIX = ".flexcnn-lock"


def lock_file_for(path: str | Path) -> Path:
    """The file whose ``flock`` guards the journal or SQLite file ``path``."""
    return Path(f"{path}{LOCK_SUFFIX}")


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing), waiting for it as long as it takes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for ``name`` (PostgreSQL's advisory locks take a bigint)."""
    digest = hashlib.blake2b(f"flexcnn:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def take_advisory_lock(engine: sqlalchemy.Engine, name: str) -> sqlalchemy.Connection:
    """A connection of ``engine`` in a transaction holding PostgreSQL's advisory lock ``name`` (waits for it)."""
    import sqlalchemy

    conn = engine.connect()
    try:
        conn.begin()
        conn.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key(name)})
    except BaseException:
        conn.close()
        raise
    return conn


def release_advisory_lock(conn: sqlalchemy.Connection) -> None:
    """End the lock's transaction. Nothing was written on it; a connection that died took the lock with it."""
    with contextlib.suppress(Exception):
        conn.rollback()
    with contextlib.suppress(Exception):
        conn.close()


@contextlib.contextmanager
def advisory_lock(engine: sqlalchemy.Engine, name: str) -> Iterator[None]:
    """Hold PostgreSQL's advisory lock ``name`` until the block ends."""
    conn = take_advisory_lock(engine, name)
    try:
        yield
    finally:
        release_advisory_lock(conn)
