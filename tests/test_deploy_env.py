"""What the compose and Kubernetes files rely on: the storage from FLEXCNN_STORAGE, secrets from *_FILE.

Both files hand ``flexcnn`` its storage URL in ``FLEXCNN_STORAGE`` and its
secrets as mounted files (``PGPASSWORD_FILE``, ``WANDB_API_KEY_FILE``), never as
values in the environment. These tests run the real commands in subprocesses:
every ``flexcnn optuna`` command on a study whose storage comes from the
variable, and a PostgreSQL role that only a password lets in (the throwaway
cluster of tests/postgres.py with a scram-sha-256 rule for that role), reached
with the password from a file.
"""

from __future__ import annotations

import os
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from flexcnn.cli import cli
from flexcnn.errors import UserError
from flexcnn.reporters.wandb import logged_in
from flexcnn.search.storage import with_driver
from tests.helpers import flexcnn_cli, write_sweep
from tests.postgres import PostgresCluster, postgres  # noqa: F401  (a fixture)

pytestmark = pytest.mark.timeout(300)

SECRET_VARS = ("FLEXCNN_STORAGE", "PGPASSWORD", "PGPASSWORD_FILE", "PGPASSFILE", "WANDB_API_KEY", "WANDB_API_KEY_FILE")


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This environment without any storage or secret variable (and no ~/.pgpass), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in SECRET_VARS}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {**env, "HOME": str(home), "WANDB_MODE": "disabled", **extra}


# --------------------------------------------------------------------------- FLEXCNN_STORAGE


def test_every_optuna_command_takes_its_storage_from_flexcnn_storage(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path, {"optim.lr": {"values": [0.003, 0.01]}}, run_cap=1)
    journal = tmp_path / "from-env.log"
    env = clean_env(tmp_path, FLEXCNN_STORAGE=str(journal))
    study = ["--study", "envstudy"]

    worker = flexcnn_cli("optuna", "worker", str(sweep), *study, "--threads", "1", env=env)
    assert worker.returncode == 0, worker.stderr
    assert journal.is_file() and not (Path.cwd() / "optuna-journal.log").exists()
    # run extends the same study to 2 trials, then workers it starts use the same storage
    run = flexcnn_cli("optuna", "run", str(sweep), *study, "--n-trials", "2", "--threads", "1", env=env)
    assert run.returncode == 0, run.stderr
    assert f"on journal file {journal}" in run.stdout, run.stdout
    status = flexcnn_cli("optuna", "status", env=env)
    assert status.returncode == 0 and "envstudy: COMPLETE 2 " in status.stdout, status.stdout + status.stderr
    best = flexcnn_cli("optuna", "best", *study, env=env)
    assert best.returncode == 0 and "study 'envstudy': COMPLETE 2 " in best.stdout, best.stdout + best.stderr
    url = flexcnn_cli("optuna", "url", env=env)
    assert url.returncode == 0 and str(journal) in url.stdout.splitlines()[0], url.stdout + url.stderr
    page = tmp_path / "envstudy.html"
    report = flexcnn_cli("report", *study, "-o", str(page), env=env)
    assert report.returncode == 0 and "2 trials" in report.stdout and page.is_file(), report.stdout + report.stderr
    # a report of run folders does not mix in the study storage the variable names
    folders = flexcnn_cli("report", str(tmp_path / "runs"), "-o", str(tmp_path / "folders.html"), env=env)
    assert folders.returncode == 0, folders.stdout + folders.stderr
    # --storage wins over the variable
    other = flexcnn_cli("optuna", "status", "--storage", str(tmp_path / "other.log"), env=env)
    assert other.returncode == 2 and "other.log does not exist" in other.stderr, other.stderr


@pytest.mark.parametrize("command", ["run", "worker", "status", "best", "url"])
def test_a_bad_flexcnn_storage_is_named_in_a_one_line_error(command: str, tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path, {"optim.lr": {"values": [0.003]}}, method="grid")
    args = ["optuna", command, *([str(sweep)] if command in ("run", "worker") else [])]
    out = flexcnn_cli(*args, env=clean_env(tmp_path, FLEXCNN_STORAGE="nosuch://db"))
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.startswith("error: storage 'nosuch://db': unsupported scheme 'nosuch'"), out.stderr
    assert "Traceback" not in out.stderr


def test_every_wandb_mode_option_offers_the_config_s_modes() -> None:
    # The CLI spells the choices out rather than import the config (pydantic) at start-up.
    from flexcnn.sections import WANDB_MODES

    optuna = cli.commands["optuna"]
    assert isinstance(optuna, click.Group)
    for command in (cli.commands["train"], optuna.commands["run"], optuna.commands["worker"]):
        (option,) = [p for p in command.params if p.name == "wandb_mode"]
        assert tuple(option.type.choices) == WANDB_MODES, command.name


def test_the_help_of_every_storage_option_names_the_variable() -> None:
    group = cli.commands["optuna"]
    assert isinstance(group, click.Group)
    for name in ("run", "worker", "status", "best", "url"):
        (option,) = [p for p in group.commands[name].params if p.name == "storage"]
        assert option.envvar == "FLEXCNN_STORAGE", name
    (option,) = [p for p in cli.commands["report"].params if p.name == "storage"]
    assert option.envvar == "FLEXCNN_STORAGE" and "FLEXCNN_STORAGE" in (option.help or "")


# --------------------------------------------------------------------------- *_FILE secrets


def password_only_role(cluster: PostgresCluster, role: str, password: str) -> str:
    """A role that logs in with its password only (scram-sha-256), owning a new database; its URL, no password."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(with_driver(cluster.url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(f"CREATE ROLE {role} LOGIN PASSWORD :pw"), {"pw": password})
            conn.execute(sqlalchemy.text(f"CREATE DATABASE {role} OWNER {role}"))
            hba = cluster.data_dir / "pg_hba.conf"
            hba.write_text(f"host all {role} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
            assert conn.execute(sqlalchemy.text("SELECT pg_reload_conf()")).scalar()
    finally:
        engine.dispose()
    return f"postgresql://{role}@127.0.0.1:{cluster.port}/{role}"


def test_pgpassword_file_lets_a_command_into_a_password_only_database(
    tmp_path: Path,
    postgres: PostgresCluster,  # noqa: F811
) -> None:
    password = "s3cret-" + os.urandom(8).hex()
    url = password_only_role(postgres, "pwonly", password)
    secret = tmp_path / "postgres_password"
    secret.write_text(password + "\n")  # as `echo ... > file` leaves it

    def status(**extra: str) -> tuple[int, str]:
        out = flexcnn_cli("optuna", "status", env=clean_env(tmp_path, FLEXCNN_STORAGE=url, **extra))
        text = out.stdout + out.stderr
        assert password not in text and "Traceback" not in text, text
        return out.returncode, text

    assert status(PGPASSWORD_FILE=str(secret)) == (0, "no studies in this storage\n")
    code, text = status()  # no password at all: the server refuses, and the error says so in one line
    assert code == 2 and "cannot open storage" in text and "password" in text, text
    code, text = status(PGPASSWORD_FILE=str(secret), PGPASSWORD="x")
    assert (code, text) == (2, "error: both PGPASSWORD and PGPASSWORD_FILE are set; set only one of them\n")
    code, text = status(PGPASSWORD_FILE=str(tmp_path / "missing"))
    assert code == 2 and text.startswith(f"error: PGPASSWORD_FILE={tmp_path / 'missing'}: cannot read"), text
    (tmp_path / "empty").write_text("\n")
    code, text = status(PGPASSWORD_FILE=str(tmp_path / "empty"))
    assert (code, text) == (2, f"error: PGPASSWORD_FILE={tmp_path / 'empty'}: the secret file is empty\n")


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_command_reads_secret_files_before_it_starts(name: str, tmp_path: Path) -> None:
    # The group reads them for every subcommand (flexcnn.secret_files), so a bad one stops any command at once.
    key = tmp_path / "wandb_api_key"
    key.write_text("k" * 40)
    env = {"WANDB_API_KEY": "x" * 40, "WANDB_API_KEY_FILE": str(key), "PGPASSWORD": None, "PGPASSWORD_FILE": None}
    result = CliRunner().invoke(cli, [name, "--help"], env=env)
    assert isinstance(result.exception, UserError), result.output
    assert str(result.exception) == "both WANDB_API_KEY and WANDB_API_KEY_FILE are set; set only one of them"
    assert "k" * 40 not in str(result.exception) + result.output


def test_a_wandb_key_file_is_read_into_the_variable_and_counts_as_logged_in(tmp_path: Path) -> None:
    key = tmp_path / "wandb_api_key"
    assert not logged_in({"WANDB_API_KEY_FILE": str(key), "NETRC": str(tmp_path / "none")})  # missing
    key.write_text("")
    assert not logged_in({"WANDB_API_KEY_FILE": str(key), "NETRC": str(tmp_path / "none")})  # empty
    key.write_text("0123456789abcdef" * 2 + "deadbeef\n")
    assert logged_in({"WANDB_API_KEY_FILE": str(key), "NETRC": str(tmp_path / "none")})
    # In a command: the key reaches WANDB_API_KEY (what wandb reads) and the _FILE variable is gone.
    env = {"WANDB_API_KEY_FILE": str(key), "WANDB_API_KEY": None}

    @cli.command("probe-secrets", hidden=True)
    def probe_command() -> None:
        click.echo(f"{os.environ.get('WANDB_API_KEY') == key.read_text().strip()} {'WANDB_API_KEY_FILE' in os.environ}")

    try:
        result = CliRunner().invoke(cli, ["probe-secrets"], env=env)
    finally:
        cli.commands.pop("probe-secrets")
    assert result.exit_code == 0 and result.output == "True False\n", result.output


def test_a_program_calling_run_itself_gets_the_wandb_key_file_read_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flexcnn.config import load_config
    from flexcnn.reporters.wandb import wandb_reporter_for

    key = tmp_path / "wandb_api_key"
    key.write_text("0123456789abcdef" * 2 + "deadbeef\n")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_API_KEY_FILE", str(key))
    assert wandb_reporter_for(load_config(None, ["logging.wandb.mode=disabled"])) is None
    assert os.environ.get("WANDB_API_KEY") == key.read_text().strip()
    assert "WANDB_API_KEY_FILE" not in os.environ
