"""Studies of several objectives, and what Optuna's own tools see of a study.

A module fixture runs two real studies into one journal file, from a folder
other than the repository root (so the sweeps' base configs are found by
walking up from the sweep file): ``sweeps/pareto-digits.yaml`` (val/acc
against trainable parameters, NSGA-II, 12 trials) and the demo sweep
(``sweeps/demo.yaml``, 4 trials). The tests then read them back with Optuna,
with ``flexcnn optuna best``, with the ``optuna`` CLI and with
``optuna-dashboard`` itself, started from the command line ``flexcnn optuna
run`` printed and queried over its HTTP API on the loopback.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from flexcnn.errors import ConfigError
from flexcnn.search.objectives import objectives_from_cli, parse_objective
from flexcnn.search.storage import open_storage, parse_storage
from flexcnn.search.study import join_plan, open_study, plan_study
from flexcnn.search.sweep_file import load_sweep
from flexcnn.search.workers import WorkerOptions, run_worker
from tests.conftest import REPO
from tests.helpers import flexcnn_cli, write_sweep
from tests.postgres import PostgresCluster, postgres  # noqa: F401  (the fixture)

BIN = Path(sys.executable).parent
TINY = {
    "model": {"kind": "flexible_cnn", "num_filters": [8, 16], "dense_units": [32]},
    "data": {"source": "digits", "augment": "none", "hflip": False, "batch_size": 64, "limit": 300},
    "optim": {"name": "adam", "lr": 0.003, "scheduler": "none"},
    "train": {"epochs": 2, "seed": 0},
    "logging": {"progress": False, "wandb": {"mode": "disabled", "num_samples": 0}},
}


@dataclass
class Studies:
    folder: Path
    storage: Path
    artifacts: Path
    pareto_out: str  # what `flexcnn optuna run` printed
    demo_out: str

    def load(self, name: str) -> optuna.Study:
        return optuna.load_study(study_name=name, storage=open_storage(parse_storage(str(self.storage))))

    def printed(self, prefix: str) -> str:
        """The command `flexcnn optuna run` printed after ``prefix`` (``dashboard:``, ``optuna CLI:``)."""
        lines = [line for line in self.demo_out.splitlines() if line.startswith(prefix)]
        assert lines, f"no {prefix!r} line in:\n{self.demo_out}"
        return lines[0].removeprefix(prefix).strip()


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> Studies:
    folder = tmp_path_factory.mktemp("studies")
    elsewhere = folder / "elsewhere"  # not the repository root: base configs are found from the sweep file
    elsewhere.mkdir()
    storage = folder / "demo.log"
    common = ["--storage", str(storage), "--workers", "2", "--seed", "0", "--output-dir", str(folder / "runs")]
    pareto = flexcnn_cli("optuna", "run", str(REPO / "sweeps/pareto-digits.yaml"), *common, cwd=elsewhere, timeout=600)
    assert pareto.returncode == 0, pareto.stdout + pareto.stderr
    demo = flexcnn_cli(
        "optuna", "run", str(REPO / "sweeps/demo.yaml"), *common, "--n-trials", "4", cwd=elsewhere, timeout=600
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    return Studies(folder, storage, Path(f"{storage}-artifacts"), pareto.stdout, demo.stdout)


# --------------------------------------------------------------------------- the Pareto front


def test_a_two_objective_study_on_digits_ends_with_a_pareto_front(studies: Studies) -> None:
    assert "val/acc (maximize), params/trainable (minimize), sampler nsga2, pruner none" in studies.pareto_out
    study = studies.load("pareto-digits")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.metric_names == ["val/acc", "params/trainable"]
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 12
    front = study.best_trials
    assert len(front) >= 3
    for trial in complete:  # the second value is the model's size, as the run recorded it
        summary = json.loads((Path(trial.user_attrs["run_dir"]) / "summary.json").read_text())
        assert trial.values[1] == summary["params/trainable"] == trial.user_attrs["params/trainable"]
        assert trial.values[0] == summary["best/val/acc"]

    out = flexcnn_cli("optuna", "best", "--storage", str(studies.storage), "--study", "pareto-digits")
    assert out.returncode == 0, out.stderr
    assert f"Pareto front: {len(front)} trial(s)" in out.stdout
    table = out.stdout.split("Pareto front:", 1)[1].splitlines()[1:]
    assert table[0].split()[:4] == ["rank", "trial", "val/acc", "params/trainable"]
    rows = [line.split() for line in table[2:] if line.strip()]
    assert sorted(int(row[1]) for row in rows) == sorted(t.number for t in front)
    accs = [float(row[2]) for row in rows]
    assert accs == sorted(accs, reverse=True)  # best metric first, smallest models last


def test_export_any_member_of_the_front(studies: Studies, tmp_path: Path) -> None:
    study = studies.load("pareto-digits")
    front = sorted(study.best_trials, key=lambda t: t.values[1])
    target = tmp_path / "small.yaml"
    args = ["optuna", "best", "--storage", str(studies.storage), "--study", "pareto-digits", "--export", str(target)]
    refused = flexcnn_cli(*args)
    assert refused.returncode == 2 and not target.exists()
    assert "choose one with --trial N (Pareto front: trials" in refused.stderr
    assert ", ".join(str(n) for n in sorted(t.number for t in front)) in refused.stderr

    smallest = front[0]
    done = flexcnn_cli(*args, "--trial", str(smallest.number))
    assert done.returncode == 0, done.stderr
    text = target.read_text()
    assert f"# Trial {smallest.number} of Optuna study 'pareto-digits'" in text
    assert f"params/trainable {smallest.values[1]:.6g}" in text
    exported = yaml.safe_load(text)
    assert exported["model"] == smallest.user_attrs["config"]["model"]


def test_trials_carry_flat_sortable_attributes_and_artifacts(studies: Studies) -> None:
    for name in ("pareto-digits", "demo"):
        study = studies.load(name)
        for trial in study.get_trials(states=(TrialState.COMPLETE,)):
            attrs = trial.user_attrs
            summary = json.loads((Path(attrs["run_dir"]) / "summary.json").read_text())
            for key in ("test/acc", "test/f1_macro", "test/loss", "test/precision_macro", "test/recall_macro"):
                assert attrs[key] == summary[key] and isinstance(attrs[key], float)
            assert attrs["params/total"] == summary["params/total"] and isinstance(attrs["params/total"], int)
            assert attrs["latency_ms"] == summary["latency_ms_per_image"] > 0 and summary["latency_batch"] > 0
            assert attrs["status"] in ("completed", "early_stopped") and attrs["epochs"] >= 1
            assert attrs["summary"]["test/acc"] == attrs["test/acc"]  # the mapping existing readers use stays
            uploaded = {
                json.loads(v)["filename"]: json.loads(v)["artifact_id"]
                for k, v in trial.system_attrs.items()
                if k.startswith("artifacts:")
            }
            assert set(uploaded) == {"confusion.png", "best.pt"}
            for filename, artifact_id in uploaded.items():
                stored = studies.artifacts / artifact_id
                assert stored.read_bytes() == (Path(attrs["run_dir"]) / filename).read_bytes()
        for trial in study.get_trials(states=(TrialState.PRUNED,)):  # the demo prunes: no artifacts, no test
            assert not [k for k in trial.system_attrs if k.startswith("artifacts:")]
            assert "test/acc" not in trial.user_attrs and trial.user_attrs["status"] == "pruned"


# --------------------------------------------------------------------------- optuna-dashboard and the optuna CLI


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


@contextlib.contextmanager
def dashboard(argv: list[str], cwd: Path) -> Iterator[str]:
    """``optuna-dashboard`` ARGV on a loopback port; yields its base URL; stopped (and reaped) at the end."""
    port = _free_port()
    proc = subprocess.Popen(
        [str(BIN / argv[0]), *argv[1:], "--host", "127.0.0.1", "--port", str(port), "--server", "wsgiref"],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"optuna-dashboard exited {proc.returncode}:\n{proc.communicate()[0]}")
            try:
                _get(f"{base}/api/meta")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("optuna-dashboard did not answer within 60 s") from None
                time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_optuna_dashboard_serves_objective_names_sortable_attributes_and_artifacts(studies: Studies) -> None:
    printed = shlex.split(studies.printed("dashboard:"))  # what `flexcnn optuna run` told the user to paste
    assert printed[0] == "optuna-dashboard" and printed[1] == str(studies.storage.resolve())
    assert printed[2:] == ["--artifact-dir", str(studies.artifacts.resolve())]
    with dashboard(printed, cwd=Path("/")) as base:
        assert json.loads(_get(f"{base}/api/meta"))["artifact_is_available"] is True
        summaries = json.loads(_get(f"{base}/api/studies"))["study_summaries"]
        ids = {s["study_name"]: s["study_id"] for s in summaries}
        assert set(ids) == {"pareto-digits", "demo"}
        names = {"demo": ["val/acc"], "pareto-digits": ["val/acc", "params/trainable"]}
        for name, study_id in ids.items():
            detail = json.loads(_get(f"{base}/api/studies/{study_id}"))
            assert detail["objective_names"] == names[name]
            sortable = {a["key"]: a["sortable"] for a in detail["union_user_attrs"]}
            for key in ("test/acc", "test/f1_macro", "params/trainable", "latency_ms", "epochs"):
                assert sortable[key] is True, (name, key, sortable)
            complete = [t for t in detail["trials"] if t["state"] == "Complete"]
            assert complete
            for trial in complete:
                attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
                float(attrs["test/acc"])  # a number the table can sort
                run_dir = Path(attrs["run_dir"])
                served = {a["filename"]: a["artifact_id"] for a in trial["artifacts"]}
                assert set(served) == {"confusion.png", "best.pt"}
                for filename, artifact_id in served.items():
                    body = _get(f"{base}/artifacts/{study_id}/{trial['trial_id']}/{artifact_id}")
                    assert body == (run_dir / filename).read_bytes()
                    if filename == "confusion.png":
                        assert body.startswith(b"\x89PNG")
            if name == "pareto-digits":
                assert len(detail["best_trials"]) == len(studies.load(name).best_trials)


def test_the_optuna_cli_reads_the_printed_form_and_not_ours(studies: Studies, tmp_path: Path) -> None:
    printed = shlex.split(studies.printed("optuna CLI:"))
    assert printed[:3] == ["optuna", "studies", "--storage"]
    listed = subprocess.run(
        [str(BIN / "optuna"), *printed[1:], "-f", "json"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert listed.returncode == 0, listed.stderr
    assert {s["name"] for s in json.loads(listed.stdout)} == {"pareto-digits", "demo"}
    # Our own journal:PATH form means nothing to Optuna's CLI: it fails, finding no study.
    ours = subprocess.run(
        [str(BIN / "optuna"), "studies", "--storage", f"journal:{studies.storage}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ours.returncode != 0 and "pareto-digits" not in ours.stdout
    # Told it is a journal file, it quietly creates an empty file named "journal:..." and lists nothing.
    pasted = subprocess.run(
        [str(BIN / "optuna"), "studies", "--storage-class", "JournalFileBackend", "--storage", "journal:demo.log"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert pasted.returncode == 0 and "demo" not in pasted.stdout
    assert (tmp_path / "journal:demo.log").stat().st_size == 0
    url = flexcnn_cli("optuna", "url", "--storage", f"journal:{studies.storage}")
    assert url.returncode == 0 and url.stdout.splitlines()[0] == str(studies.storage.resolve())


def test_sqlite_form_works_in_both_tools_from_another_folder(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    rel = "sqlite:///studies.db"
    storage = open_storage(parse_storage(f"sqlite:///{tmp_path / 'a' / 'studies.db'}"))
    study = optuna.create_study(study_name="tiny", storage=storage)
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    url = flexcnn_cli("optuna", "url", "--storage", rel, cwd=tmp_path / "a")
    assert url.returncode == 0, url.stderr
    form = url.stdout.splitlines()[0]
    assert form == f"sqlite:///{tmp_path / 'a' / 'studies.db'}"
    listed = subprocess.run(
        [str(BIN / "optuna"), "studies", "--storage", form, "-f", "json"],
        cwd=tmp_path / "b",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0 and [s["name"] for s in json.loads(listed.stdout)] == ["tiny"], listed.stderr
    with dashboard(["optuna-dashboard", form], cwd=tmp_path / "b") as base:
        summaries = json.loads(_get(f"{base}/api/studies"))["study_summaries"]
        assert [s["study_name"] for s in summaries] == ["tiny"]


# --------------------------------------------------------------------------- planning (no training)


def _sweep(tmp_path: Path, **extra: Any) -> Path:
    return write_sweep(
        tmp_path,
        {"model.num_filters": {"values": [[4], [8, 16]]}},
        base=TINY,
        **{"method": "bayes", "run_cap": 4, **extra},
    )


def test_objectives_parse_with_aliases_and_natural_goals() -> None:
    assert [str(s) for s in objectives_from_cli(["params", "val/acc:maximize", "latency"])] == [
        "val/acc:maximize",
        "params/trainable:minimize",
        "latency_ms:minimize",
    ]
    assert str(parse_objective({"name": "val/loss"})) == "val/loss:minimize"
    for bad, message in [
        (["val/acc", "val/loss"], "exactly one of"),
        (["params"], "exactly one of"),
        (["val/acc", "params", "params/trainable"], "more than once"),
        (["val/acc:minimize"], "wrong way round"),
        (["val/acc:up"], "maximize or minimize"),
        (["val/acc", "flops"], "unknown objective 'flops'"),
    ]:
        with pytest.raises(ConfigError, match=message):
            objectives_from_cli(bad)


def test_sampler_and_pruner_for_several_objectives(tmp_path: Path) -> None:
    hyperband = {"type": "hyperband", "min_iter": 1, "eta": 3}
    sweep = load_sweep(_sweep(tmp_path, early_terminate=hyperband))
    single = plan_study(sweep)
    assert (single.settings.sampler, single.settings.pruner, single.notices) == ("tpe", "hyperband", [])
    multi = plan_study(sweep, objectives=["val/acc", "params"])
    assert (multi.settings.sampler, multi.settings.pruner) == ("nsga2", "none")
    assert multi.notices == [
        "pruning is off: Optuna cannot prune a study of several objectives (early_terminate ignored)"
    ]
    assert plan_study(sweep, objectives=["val/acc", "params"], sampler="tpe").settings.sampler == "tpe"
    with pytest.raises(ConfigError, match="cmaes optimises a single objective"):
        plan_study(sweep, objectives=["val/acc", "params"], sampler="cmaes")
    with pytest.raises(ConfigError, match="cannot prune a study of several objectives"):
        plan_study(sweep, objectives=["val/acc", "params"], pruner="median")
    # controller.objectives in the file gives the same plan; the CLI's list replaces it
    from_file = load_sweep(_sweep(tmp_path, controller={"type": "cloud", "objectives": ["params:minimize"]}))
    assert plan_study(from_file).settings.objectives == ["val/acc:maximize", "params/trainable:minimize"]
    assert plan_study(from_file, objectives=["val/loss"]).settings.objectives == ["val/loss:minimize"]
    assert plan_study(from_file, objectives=["val/loss"]).base_tree["train"]["monitor"] == "val/loss"


def test_a_joining_worker_takes_the_stored_objectives_or_is_refused(tmp_path: Path) -> None:
    sweep = load_sweep(_sweep(tmp_path))
    storage = open_storage(parse_storage(str(tmp_path / "s.log")))
    open_study(storage, "mo", plan_study(sweep, objectives=["val/acc", "latency_ms"]))
    joined = join_plan(storage, "mo", sweep)  # no --objective: the study's own
    assert joined.settings.objectives == ["val/acc:maximize", "latency_ms:minimize"]
    open_study(storage, "mo", joined)
    other = join_plan(storage, "mo", sweep, objectives=["val/acc", "params"])
    with pytest.raises(ConfigError, match="it optimises val/acc:maximize, latency_ms:minimize, this sweep"):
        open_study(storage, "mo", other)


def test_latency_is_an_objective_measured_on_the_trials_device(tmp_path: Path) -> None:
    sweep = _sweep(tmp_path)
    lines: list[str] = []
    opts = WorkerOptions(
        sweep_path=sweep,
        study_name="fast",
        storage=str(tmp_path / "fast.log"),
        threads=1,
        seed=0,
        n_trials=2,
        objectives=("val/acc", "latency"),
        artifacts="none",
    )
    report = run_worker(opts, say=lines.append)
    assert report.ran == Counter({"COMPLETE": 2}), lines
    study = optuna.load_study(study_name="fast", storage=open_storage(parse_storage(str(tmp_path / "fast.log"))))
    assert study.metric_names == ["val/acc", "latency_ms"]
    for trial in study.trials:
        summary = json.loads((Path(trial.user_attrs["run_dir"]) / "summary.json").read_text())
        assert trial.values[1] == summary["latency_ms_per_image"] == trial.user_attrs["latency_ms"] > 0
        assert summary["latency_batch"] == 32 and trial.intermediate_values == {}  # no pruning reports
        assert not [k for k in trial.system_attrs if k.startswith("artifacts:")]  # --artifacts none
    assert any("COMPLETE val/acc" in line and ", latency_ms " in line for line in lines)
    assert not (tmp_path / "fast.log-artifacts").exists()


def test_artifacts_option_errors_are_clear(tmp_path: Path) -> None:
    from flexcnn.errors import UserError
    from flexcnn.search.artifacts import artifact_target

    journal = parse_storage(str(tmp_path / "x.log"))
    assert artifact_target(None, journal).location == str(tmp_path / "x.log-artifacts")
    assert artifact_target(None, parse_storage("postgresql://u@h/db")).kind == "none"
    with pytest.raises(UserError, match="give a bucket"):
        artifact_target("s3://bucket/prefix", journal)
    with pytest.raises(UserError, match="unsupported scheme 'gs'"):
        artifact_target("gs://bucket", journal)
    try:
        import boto3  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match="needs boto3, which is not installed"):
            artifact_target("s3://bucket", journal)


@pytest.mark.postgres
def test_postgresql_form_names_its_driver_for_both_tools(postgres: PostgresCluster, tmp_path: Path) -> None:  # noqa: F811
    study = optuna.create_study(study_name="pg-tools", storage=open_storage(parse_storage(postgres.url)))
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    url = flexcnn_cli("optuna", "url", "--storage", postgres.url)
    assert url.returncode == 0, url.stderr
    form = url.stdout.splitlines()[0]
    assert form == postgres.url.replace("postgresql://", "postgresql+psycopg2://")
    assert "artifacts: none uploaded" in url.stdout  # no folder next to a database server

    def optuna_cli(storage: str) -> subprocess.CompletedProcess[str]:
        argv = [str(BIN / "optuna"), "studies", "--storage", storage, "-f", "json"]
        return subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120)

    listed = optuna_cli(form)
    assert listed.returncode == 0 and [s["name"] for s in json.loads(listed.stdout)] == ["pg-tools"], listed.stderr
    bare = optuna_cli(postgres.url)  # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, not installed here
    assert bare.returncode != 0 and "pg-tools" not in bare.stdout
    with dashboard(["optuna-dashboard", form], cwd=tmp_path) as base:
        summaries = json.loads(_get(f"{base}/api/studies"))["study_summaries"]
        assert [s["study_name"] for s in summaries] == ["pg-tools"]
