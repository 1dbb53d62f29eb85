"""The reporter contract, run against every registered reporter (flexcnn/reporters/__init__.py).

Each reporter, built through the registry from one context that enables them
all, sees four real runs of a tiny FlexibleCNN on the embedded digits: one that
completes, one that another reporter prunes (StopRun), one that fails (the loss
turns NaN in epoch 2: TrainingDiverged) and one stopped by Ctrl-C
(KeyboardInterrupt) in the middle of epoch 2. In every one it must hear the
hooks in the contract's order (``on_epoch`` before last.pt for a record keeper,
after it for the others), ``on_end`` exactly once with the run's status, raise
nothing itself, and do what it is for (``PURPOSE`` below). A reporter
registered later runs the whole suite without edits; add its purpose check to
``PURPOSE`` to hold it to its own job too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch

import flexcnn.run as run_module
from flexcnn.checkpoint import load_checkpoint
from flexcnn.config import load_config
from flexcnn.errors import TrainingDiverged
from flexcnn.reporters import Reporter, ReporterContext, RunResult, StopRun, available_reporters, build_reporter
from flexcnn.run import run
from tests.conftest import TINY
from tests.helpers import offline_run_dir, read_offline_run

SCENARIOS = ("completed", "pruned", "failed", "interrupted")
HOOKS = ("on_start", "on_epoch_start", "on_batch", "on_epoch", "on_end")
EPOCHS = 2  # TINY trains two epochs


@dataclass
class Call:
    hook: str
    args: tuple[Any, ...]
    last_pt_epoch: int | None = None  # for on_epoch: the epoch last.pt held when the hook was called


@dataclass
class Spy:
    """Records every hook the reporter is called with, and anything it raised; the hooks still run."""

    reporter: Reporter
    calls: list[Call] = field(default_factory=list)
    raised: list[BaseException] = field(default_factory=list)
    run_dir: Path | None = None

    def __post_init__(self) -> None:
        for hook in HOOKS:
            setattr(self.reporter, hook, self._wrap(hook, getattr(self.reporter, hook)))

    def _wrap(self, hook: str, real: Callable[..., None]) -> Callable[..., None]:
        def spied(*args: Any) -> None:
            call = Call(hook, args)
            if hook == "on_start":
                self.run_dir = Path(args[0].run_dir)
            elif hook == "on_epoch":
                assert self.run_dir is not None
                last = self.run_dir / "last.pt"
                call.last_pt_epoch = int(load_checkpoint(last)["epoch"]) if last.is_file() else 0
            self.calls.append(call)
            try:
                real(*args)
            except BaseException as exc:
                self.raised.append(exc)
                raise

        return spied


class StopAt(Reporter):
    """Prunes the run after ``epoch`` (0-based) the way the Optuna reporter does."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        if epoch == self.epoch:
            raise StopRun("pruned", "pruned by the contract suite")


class InterruptAt(Reporter):
    """Ctrl-C during training batch ``batch`` of ``epoch``."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch
        self.current, self.batches = -1, 0

    def on_epoch_start(self, epoch: int, batches: int) -> None:
        self.current, self.batches = epoch, 0

    def on_batch(self, images: int) -> None:
        self.batches += 1
        if self.current == self.epoch and self.batches == self.batch:
            raise KeyboardInterrupt


class EpochWatch(Reporter):
    """Knows which epoch is training, for a loss that goes NaN from a given epoch on."""

    current = -1

    def on_epoch_start(self, epoch: int, batches: int) -> None:
        self.current = epoch


@pytest.fixture
def context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ReporterContext:
    """One context that every registered reporter accepts: console on, W&B offline, a real Optuna trial."""
    # W&B as on an air-gapped machine: no credentials and no server, so nothing can leave the run folder.
    for name in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_SWEEP_ID", "WANDB_RUN_ID", "WANDB_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("WANDB_DATA_DIR", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")  # in memory; its default pruner never prunes trial 0
    return ReporterContext(
        load_config(None, [*TINY, "data.limit=600", f"logging.output_dir={tmp_path}"]),
        console=True,
        wandb_mode="offline",
        wandb_group="contract",
        wandb_name="contract-run",
        wandb_tags=("contract",),
        wandb_extra_config={"contract": {"suite": "reporters"}},
        trial=study.ask(),
        metric="val/acc",
    )


@dataclass
class Seen:
    """What one run did and what the reporter under test heard of it."""

    name: str
    status: str
    result: RunResult
    run_dir: Path
    spy: Spy
    reported: list[int]  # epochs (0-based) that got on_epoch
    output: str  # what the run printed to stdout and stderr
    context: ReporterContext


@pytest.mark.parametrize("status", SCENARIOS)
@pytest.mark.parametrize("name", available_reporters())
def test_reporter_sees_every_kind_of_run_end_and_ends_cleanly(
    name: str,
    status: str,
    context: ReporterContext,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    reporter = build_reporter(name, context)
    assert reporter is not None, f"{name}: the suite's context must enable every registered reporter"
    spy = Spy(reporter)
    run_dir = tmp_path / "run"
    run_dir_result = _run(status, spy.reporter, context, run_dir, monkeypatch)

    ends = [call for call in spy.calls if call.hook == "on_end"]
    assert len(ends) == 1, f"{name}: on_end called {len(ends)} times"
    result = ends[0].args[0]
    assert result.status == status, result.reason
    if run_dir_result is not None:
        assert run_dir_result is result
    assert spy.raised == [], f"{name} raised {spy.raised!r}"
    started, reported = _check_hook_order(spy.calls, keeps_record=reporter.keeps_record)
    assert started == ([0] if status == "pruned" else [0, 1])  # failed and interrupted: in epoch 2
    assert reported == ([0, 1] if status == "completed" else [0])
    assert [row["epoch"] for row in result.history] == [e + 1 for e in reported]
    out = capsys.readouterr()
    PURPOSE.get(name, lambda seen: None)(Seen(name, status, result, run_dir, spy, reported, out.out + out.err, context))


def _run(
    status: str, reporter: Reporter, context: ReporterContext, run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> RunResult | None:
    """One real run that ends as ``status`` says; its result (None when run() raised, as a failed run does)."""
    config = context.config
    if status == "completed":
        return run(config, [reporter], run_dir=run_dir)
    if status == "pruned":  # the stopper comes first: every reporter still hears the epoch it stops at
        return run(config, [StopAt(0), reporter], run_dir=run_dir)
    if status == "interrupted":
        return run(config, [InterruptAt(1, batch=3), reporter], run_dir=run_dir)
    watch = EpochWatch()
    real_make_loss = run_module.make_loss

    def nan_from_epoch_2(*args: Any, **kwargs: Any) -> Callable[..., torch.Tensor]:
        loss_fn = real_make_loss(*args, **kwargs)
        return lambda logits, target: loss_fn(logits, target) * (float("nan") if watch.current >= 1 else 1.0)

    monkeypatch.setattr(run_module, "make_loss", nan_from_epoch_2)
    with pytest.raises(TrainingDiverged, match="epoch 2"):
        run(config, [watch, reporter], run_dir=run_dir)
    return None


def _check_hook_order(calls: list[Call], *, keeps_record: bool) -> tuple[list[int], list[int]]:
    """Assert the contract's order; the epochs that started and those that got ``on_epoch``."""
    hooks = [call.hook for call in calls]
    assert hooks[0] == "on_start" and hooks.count("on_start") == 1, hooks[:3]
    assert hooks[-1] == "on_end", hooks[-3:]
    started: list[int] = []
    reported: list[int] = []
    batches = seen = 0
    for call in calls[1:-1]:
        if call.hook == "on_epoch_start":
            assert len(started) == len(reported), "a new epoch began before the last one was reported"
            epoch, batches = call.args
            assert epoch == len(started) and batches > 0
            started.append(epoch)
            seen = 0
        elif call.hook == "on_batch":
            assert len(started) == len(reported) + 1, "on_batch outside an epoch"
            seen += 1
            assert seen <= batches and call.args[0] > 0
        else:
            epoch, metrics = call.args
            assert call.hook == "on_epoch" and started and epoch == started[-1] and epoch not in reported
            assert seen == batches, f"epoch {epoch}: {seen} of {batches} batches reported"
            assert metrics["epoch"] == epoch + 1
            # A record keeper hears before the epoch's last.pt is written; the others once it is on disk.
            assert call.last_pt_epoch == (epoch if keeps_record else epoch + 1), (call.last_pt_epoch, epoch)
            reported.append(epoch)
    return started, reported


# --------------------------------------------------------------------------- what each reporter is for


def _files(seen: Seen) -> None:
    rows = [json.loads(line) for line in (seen.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows == seen.result.history
    summary = json.loads((seen.run_dir / "summary.json").read_text())
    assert summary == json.loads(json.dumps(seen.result.summary))
    assert summary["status"] == seen.status and summary["epochs_completed"] == len(seen.reported)
    assert load_config(seen.run_dir / "config.yaml") == seen.context.config
    finished = seen.status == "completed"
    assert ("test/acc" in summary) == finished
    for name in ("per_class.json", "confusion.png", "roc.json"):
        assert (seen.run_dir / name).is_file() == finished, name
    assert not list(seen.run_dir.glob(".*.tmp"))


def _console(seen: Seen) -> None:
    lines = seen.output.splitlines()
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == [f"{e + 1}/{EPOCHS}" for e in seen.reported]
    assert any(line.startswith("flexcnn: ") for line in lines)
    assert f"saved to {seen.run_dir}" in lines
    ended_badly = [line for line in lines if line.startswith(f"run {seen.status}")]
    assert len(ended_badly) == (0 if seen.result.ok else 1), lines


def _wandb(seen: Seen) -> None:
    wb = read_offline_run(offline_run_dir(seen.run_dir))
    assert wb.exit_code == (1 if seen.status == "failed" else 0)  # the run is finished, failed or not
    assert wb.summary["status"] == seen.status
    assert [row["epoch"] for row in wb.history if "val/acc" in row] == [e + 1 for e in seen.reported]
    assert wb.config["contract"] == {"suite": "reporters"}
    assert (wb.run["run_group"], wb.run["display_name"]) == ("contract", "contract-run")
    assert {"contract", seen.status} <= set(wb.run["tags"])
    assert ("test/acc" in wb.summary) == (seen.status == "completed")
    assert not os.environ.get("WANDB_DATA_DIR"), "the reporter must restore the environment it changed"


def _optuna(seen: Seen) -> None:
    trial = seen.context.trial
    assert trial is not None
    (frozen,) = trial.study.trials
    expected = {row["epoch"]: row["val/acc"] for row in seen.result.history}
    assert frozen.intermediate_values == pytest.approx(expected)
    assert frozen.state == optuna.trial.TrialState.RUNNING  # reporting never ends the trial; the objective does


PURPOSE: dict[str, Callable[[Seen], None]] = {
    "files": _files,
    "console": _console,
    "wandb": _wandb,
    "optuna": _optuna,
}
