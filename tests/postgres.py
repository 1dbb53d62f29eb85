"""A throwaway PostgreSQL cluster on a loopback port, for tests of the many-machines path.

``initdb`` + ``pg_ctl start`` in a temporary folder, ``trust`` authentication on
127.0.0.1 only, stopped and deleted afterwards. PostgreSQL refuses to run as
root, so as root every server command runs as the ``postgres`` user through
``runuser``. Missing binaries fail the test loudly: CI installs the server
(.ci/run), and a silent skip would hide that the distributed path is untested.

Use it by importing the fixture: ``from tests.postgres import postgres``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

SERVER_USER = "postgres"


@dataclass(frozen=True)
class PostgresCluster:
    """A running cluster and a database named ``optuna`` on it."""

    url: str  # SQLAlchemy URL of the database
    port: int
    data_dir: Path


def find_bindir() -> Path:
    """The folder with initdb and pg_ctl: ``pg_config --bindir``, else the newest /usr/lib/postgresql/*/bin."""
    candidates: list[Path] = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0 and out.stdout.strip():
            candidates.append(Path(out.stdout.strip()))
    candidates += sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0
    )[::-1]
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    pytest.fail(
        "PostgreSQL server binaries (initdb, pg_ctl) not found via pg_config --bindir or /usr/lib/postgresql/*/bin; "
        "install the server (Debian/Ubuntu: apt-get install postgresql) - these tests must run, not skip"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    if shutil.which("runuser") is None:
        pytest.fail("running as root needs `runuser` (util-linux) to start PostgreSQL as the postgres user")
    return ["runuser", "-u", SERVER_USER, "--", *cmd]


def _run(cmd: list[str], what: str) -> None:
    out = subprocess.run(_as_server_user(cmd), capture_output=True, text=True, timeout=120, check=False)
    if out.returncode != 0:
        pytest.fail(f"{what} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")


@contextmanager
def running_cluster() -> Iterator[PostgresCluster]:
    """Start a fresh cluster; stop and delete it on exit. Also usable outside pytest (``make test-image``)."""
    bindir = find_bindir()
    root = Path(tempfile.mkdtemp(prefix="flexcnn-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, user=SERVER_USER, group=None)
    data, log = root / "data", root / "server.log"
    port = _free_port()
    _run(
        [str(bindir / "initdb"), "-D", str(data), "-U", SERVER_USER, "-A", "trust", "-E", "UTF8", "--no-sync"],
        "initdb",
    )
    # fsync off: a test cluster, thrown away afterwards. Unix socket in our folder, not /var/run.
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {root} -c fsync=off -c max_connections=50"
    try:
        _run(
            [str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "-t", "60", "start"],
            "pg_ctl start",
        )
        _run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", SERVER_USER, "optuna"], "createdb")
        yield PostgresCluster(f"postgresql://{SERVER_USER}@127.0.0.1:{port}/optuna", port, data)
    finally:
        subprocess.run(
            _as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)


def fresh_database(cluster: PostgresCluster, name: str | None = None) -> str:
    """A new, empty database on ``cluster`` (named ``name``, else a random name); its URL."""
    import uuid

    import sqlalchemy

    from flexcnn.search.storage import with_driver

    name = name or f"db_{uuid.uuid4().hex[:12]}"
    engine = sqlalchemy.create_engine(with_driver(cluster.url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return f"{cluster.url.rsplit('/', 1)[0]}/{name}"


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresCluster]:
    """Start a fresh cluster for the module's tests; stop and delete it afterwards."""
    with running_cluster() as cluster:
        yield cluster
