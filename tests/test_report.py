"""``flexcnn report`` without a browser: what it gathers, draws and writes, and how it fails.

The studies here are made with Optuna's own API around real tiny ``run()`` folders: a
two-objective one (val/acc against trainable parameters) with a pruned trial, so the Pareto
front, the cut-short learning curve and the best trial's confusion matrix, per-class table and
ROC curves all come from real runs. The demo study itself is opened in a real browser by
tests/test_report_browser.py.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from flexcnn.cli import main
from flexcnn.config import load_config
from flexcnn.report.build import write_report
from flexcnn.report.curves import learning_panels
from flexcnn.report.folder_source import from_folder
from flexcnn.report.study_source import from_study
from flexcnn.reporters import FilesReporter
from flexcnn.reporters.base import Reporter, StopRun
from flexcnn.run import run
from tests.conftest import TINY

# name -> overrides of the tiny digits run; "pruned" is stopped after its first of 3 epochs.
RUNS = {
    "small": ["model.num_filters=[4,8]", "model.dense_units=[16]"],
    "medium": ["model.num_filters=[8,16]"],
    "large": ["model.num_filters=[16,32]", "model.dense_units=[64]"],
    "pruned": ["model.num_filters=[8,16]", "optim.lr=1e-4", "train.epochs=3"],
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class PruneAfterFirstEpoch(Reporter):
    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        raise StopRun("pruned", f"pruned by Optuna at epoch {epoch + 1} (val/acc {metrics['val/acc']:.4f})")


@pytest.fixture(scope="module")
def run_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Four real run folders under one root: three completed, one pruned at epoch 1 of 3."""
    root = tmp_path_factory.mktemp("report-runs")
    folders = {}
    for name, overrides in RUNS.items():
        reporters = [FilesReporter(), *([PruneAfterFirstEpoch()] if name == "pruned" else [])]
        result = run(load_config(None, [*TINY, *overrides]), reporters, run_dir=root / name)
        assert result.status == ("pruned" if name == "pruned" else "completed")
        folders[name] = root / name
    return folders


def make_multi_study(storage: str, name: str, folders: dict[str, Path], recorded: Path | None = None) -> optuna.Study:
    """A two-objective study (maximise val/acc, minimise parameters) whose trials are the run folders.

    ``recorded``: the folder the trials say their run folders are in (default: where they are).
    """
    study = optuna.create_study(storage=storage, study_name=name, directions=["maximize", "minimize"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["val/acc", "params"])
    study.set_user_attr("flexcnn", {"metric": "val/acc", "sampler": "nsga2", "pruner": "none", "n_trials": 6})
    widths = CategoricalDistribution(["[4, 8]", "[8, 16]", "[16, 32]"])
    lr = FloatDistribution(1e-5, 1e-1, log=True)
    for key, folder in folders.items():
        summary = json.loads((folder / "summary.json").read_text())
        config = load_config(folder / "config.yaml")
        history = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        pruned = key == "pruned"
        study.add_trial(
            create_trial(
                state=TrialState.PRUNED if pruned else TrialState.COMPLETE,
                values=None if pruned else [summary["best/val/acc"], summary["params/trainable"]],
                params={"model.num_filters": json.dumps(config.model.num_filters), "optim.lr": config.optim.lr},
                distributions={"model.num_filters": widths, "optim.lr": lr},
                intermediate_values={row["epoch"]: row["val/acc"] for row in history},
                user_attrs={
                    "run_dir": str(recorded / folder.name if recorded else folder),
                    "params": {"model.num_filters": config.model.num_filters, "optim.lr": config.optim.lr},
                    "config": config.to_dict(),
                    "status": summary["status"],
                    "summary": {k: summary[k] for k in ("best/val/acc", "test/acc") if k in summary},
                    "test/acc": summary.get("test/acc"),  # the flat attribute form, as newer studies hold it
                },
            )
        )
    return study


@pytest.fixture(scope="module")
def multi_study(tmp_path_factory: pytest.TempPathFactory, run_folders: dict[str, Path]) -> tuple[str, optuna.Study]:
    storage = f"sqlite:///{tmp_path_factory.mktemp('report-study') / 'studies.db'}"
    return storage, make_multi_study(storage, "multi", run_folders)


def test_run_folder_keeps_roc_curves_for_the_report(run_folders: dict[str, Path]) -> None:
    summary = json.loads((run_folders["large"] / "summary.json").read_text())
    roc = json.loads((run_folders["large"] / "roc.json").read_text())
    assert roc["classes"] == [str(c) for c in range(10)]
    aucs = list(roc["auroc"].values())
    # The per-class AUROCs average to the summary's macro AUROC: the same probabilities.
    assert sum(aucs) / len(aucs) == pytest.approx(summary["test/auroc_macro"], abs=1e-4)
    for curve in roc["curves"].values():
        points = sorted(zip(curve["fpr"], curve["tpr"], strict=True))
        assert points[0] == (0.0, 0.0) and points[-1] == (1.0, 1.0)
        assert all(0 <= x <= 1 and 0 <= y <= 1 for x, y in points)
    assert not (run_folders["pruned"] / "roc.json").exists()  # no final evaluation, no curves


def test_multi_objective_report_shows_the_pareto_front(multi_study: tuple[str, optuna.Study], tmp_path: Path) -> None:
    storage, study = multi_study
    front = sorted(t.number for t in study.best_trials)
    data = from_study(storage, "multi")
    assert data.multi and data.objective_names == ["val/acc", "params"]
    assert sorted(data.pareto) == front
    # The best trial is the Pareto member with the highest val/acc.
    best = max(study.best_trials, key=lambda t: (t.values[0], -t.number))
    assert data.best is not None and data.best.number == best.number

    written = write_report(data, tmp_path / "multi.html")
    page = written.html.read_text()
    assert _section(page, "pareto") and "fig-pareto" in _section(page, "pareto")
    for key in ("history", "parallel", "importance", "learning", "pareto", "roc", "confusion"):
        png = written.png_dir / f"{key}.png"
        assert png.read_bytes()[:8] == PNG_MAGIC, key
    rows = _rows(page)
    assert sorted(rows) == [t.number for t in study.trials]
    assert sorted(n for n, row in rows.items() if "(Pareto)" in row) == front
    assert "PRUNED" in rows[3]
    reproduce = _section(page, "reproduce")
    assert f"--trial {best.number} --export trial-{best.number}.yaml" in reproduce
    assert "flexcnn train trial-" in reproduce
    _assert_offline(page)


def test_learning_curves_show_pruned_trials_cut_short(multi_study: tuple[str, optuna.Study]) -> None:
    storage, _ = multi_study
    data = from_study(storage, "multi")
    panels = learning_panels(data)
    assert panels[0].ylabel == "val/acc" and panels[0].xrange == (0.8, 3.2)  # the pruned run planned 3 epochs
    pruned = [s for s in panels[0].series if s.group == "t3"]
    assert len(pruned) == 1 and pruned[0].dash == "dash" and pruned[0].end_marker and pruned[0].xs == [1]
    assert "pruned at epoch 1" in pruned[0].name
    complete = [s for s in panels[0].series if s.group != "t3"]
    assert all(s.dash == "solid" and not s.end_marker and s.xs == [1, 2] for s in complete)


def test_best_trial_section_holds_real_run_content(multi_study: tuple[str, optuna.Study], tmp_path: Path) -> None:
    storage, _ = multi_study
    data = from_study(storage, "multi")
    page = write_report(data, tmp_path / "r.html").html.read_text()
    best = _section(page, "best")
    confusion = Path(data.best.run_dir, "confusion.png").read_bytes()  # type: ignore[union-attr, arg-type]
    assert base64.b64encode(confusion).decode() in best
    per_class = json.loads(Path(data.best.run_dir, "per_class.json").read_text())  # type: ignore[union-attr, arg-type]
    table = re.search(r'<table id="per-class".*?</table>', best, re.S)
    assert table is not None and table.group(0).split("<tbody>")[1].count("<tr>") == len(per_class)
    assert f"{per_class['3']['f1']!r}" in table.group(0)
    assert 'id="fig-roc"' in best


def test_metrics_fall_back_to_user_attrs_when_run_folders_moved(
    multi_study: tuple[str, optuna.Study], run_folders: dict[str, Path], tmp_path: Path
) -> None:
    storage, study = multi_study
    moved = tmp_path / "elsewhere"
    shutil.copytree(next(iter(run_folders.values())).parent, moved)
    name = f"moved-{tmp_path.name}"
    # The trials say their folders are on a machine that is gone.
    make_multi_study(storage, name, run_folders, recorded=Path("/nonexistent/runs"))
    lost = from_study(storage, name)
    best = lost.best
    assert best is not None and best.run_dir is None and "run folder not found" in (best.note or "")
    assert best.metrics["test/acc"] == study.trials[best.number].user_attrs["test/acc"]
    page = write_report(lost, tmp_path / "lost.html").html.read_text()
    assert "run folder not found" in page
    found = from_study(storage, name, runs_dir=moved)
    assert all(r.run_dir is not None and r.run_dir.parent == moved for r in found.records)


def test_report_of_a_folder_of_run_folders(run_folders: dict[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "runs"
    shutil.copytree(next(iter(run_folders.values())).parent, root / "sweep-a")
    data = from_folder(root)
    labels = {r.label: r for r in data.records}
    assert set(labels) == {f"sweep-a/{name}" for name in RUNS}
    assert labels["sweep-a/pruned"].state == "PRUNED" and labels["sweep-a/large"].state == "COMPLETE"
    # The parameters are the config fields that differ between the runs.
    assert {"model.num_filters", "optim.lr", "train.epochs"} <= set(data.records[0].params)
    assert [t.state for t in data.study.trials] == [
        TrialState.PRUNED if r.state == "PRUNED" else TrialState.COMPLETE for r in data.records
    ]
    assert data.reproduce == [f"flexcnn train {data.best.run_dir / 'config.yaml'}"]  # type: ignore[union-attr, operator]
    written = write_report(data)
    assert written.html == root / "report.html"
    page = written.html.read_text()
    assert len(_rows(page)) == len(RUNS) and "fig-importance" in page and "fig-learning" in page
    _assert_offline(page)


def test_cli_writes_the_page_and_prints_its_path(
    multi_study: tuple[str, optuna.Study], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    storage, _ = multi_study
    out = tmp_path / "out" / "page.html"
    code = _main("report", "--storage", storage, "--study", "multi", "--output", str(out))
    assert code == 0
    printed = capsys.readouterr().out
    assert f"report: {out} (" in printed and "PNGs in" in printed
    assert out.is_file() and (tmp_path / "out" / "page-figures" / "pareto.png").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--storage", "{tmp}/missing.log"], "missing.log does not exist"),
        (["--storage", "{storage}", "--study", "nope"], "no study named 'nope'"),
        (["--storage", "{storage}"], "give --study NAME (studies in"),
        (["--storage", "{storage}", "--study", "empty"], "study 'empty'"),
        (["{tmp}/empty-folder"], "no run folders under"),
        (["{tmp}/no-such-folder"], "does not exist"),
        (["{tmp}/empty-folder", "--storage", "{storage}"], "not both"),
        (["--storage", "{storage}", "--study", "multi", "--output", "{tmp}/x.txt"], "ending in .html"),
    ],
)
def test_bad_input_is_one_clear_line(
    multi_study: tuple[str, optuna.Study],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    storage, _ = multi_study
    if "empty" not in optuna.get_all_study_names(storage):
        optuna.create_study(storage=storage, study_name="empty")
    (tmp_path / "empty-folder").mkdir()
    code = _main("report", *(a.format(tmp=tmp_path, storage=storage) for a in args))
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.txt").exists() and not (tmp_path / "missing.log").exists()


# --------------------------------------------------------------------------- helpers


def _main(*argv: str) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    return int(exit_info.value.code or 0)


def _section(page: str, key: str) -> str:
    match = re.search(rf'<section id="{key}">(.*?)</section>', page, re.S)
    return match.group(1) if match else ""


def _rows(page: str) -> dict[int, str]:
    """Leaderboard rows by trial number."""
    table = re.search(r'<table id="leaderboard".*?</table>', page, re.S)
    assert table is not None
    return {int(m.group(1)): m.group(0) for m in re.finditer(r'<tr id="trial-(\d+)".*?</tr>', table.group(0), re.S)}


def _assert_offline(page: str) -> None:
    """Nothing in the markup loads from elsewhere (plotly.js itself mentions URLs; it fetches none here)."""
    markup = re.sub(r"<script>.*?</script>", "", page, flags=re.S)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", markup), "a link or source off the page"
    assert "<link" not in markup and "<iframe" not in markup
    assert "default-src 'none'" in page  # the Content-Security-Policy forbids any fetch
