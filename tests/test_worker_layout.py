"""``flexcnn optuna run --workers auto``: how many workers, and how they share the cores."""

from __future__ import annotations

from pathlib import Path

import pytest

from flexcnn.agents.gpus import discover_gpus
from flexcnn.hardware import threads_per_worker
from flexcnn.search import layout
from flexcnn.search.layout import MAX_AUTO_WORKERS, default_layout
from tests.helpers import flexcnn_cli, write_sweep


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi


def _cores(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    monkeypatch.setattr(layout, "usable_cores", lambda: n)
    monkeypatch.setattr("flexcnn.hardware.usable_cores", lambda: n)


@pytest.mark.usefixtures("no_gpu")
@pytest.mark.parametrize(
    ("cores", "trials", "workers", "threads", "why"),
    [
        (2, 30, 2, 1, "--workers auto: 2 usable cores"),  # one-thread workers beat one two-thread worker
        (4, 30, 4, 1, "--workers auto: 4 usable cores"),
        (16, 30, MAX_AUTO_WORKERS, 2, "--workers auto: 16 usable cores, at most 8"),  # 8 x 2 beat 16 x 1
        (64, 30, MAX_AUTO_WORKERS, 8, "--workers auto: 64 usable cores, at most 8"),
        (8, 3, 3, 2, "--workers auto: 8 usable cores, 3 trials"),  # an idle worker would only hold memory
        (1, 30, 1, 1, "--workers auto: 1 usable core"),
    ],
)
def test_auto_gives_each_core_a_worker_up_to_the_cap_and_the_trials(
    monkeypatch: pytest.MonkeyPatch, cores: int, trials: int, workers: int, threads: int, why: str
) -> None:
    _cores(monkeypatch, cores)
    chosen = default_layout(trials, "auto")
    assert (chosen.workers, chosen.why) == (workers, why)
    assert threads_per_worker(chosen.workers) == threads


def test_a_visible_gpu_gets_one_worker_unless_the_trials_train_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    _cores(monkeypatch, 16)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert discover_gpus(ask_torch=False).ids == ("0", "1")
    assert default_layout(30, "auto").workers == 1
    assert "flexcnn agent optuna" in default_layout(30, "cuda").why
    assert default_layout(30, "cpu").workers == MAX_AUTO_WORKERS  # train.device=cpu: the GPU is not theirs
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # CUDA's way of hiding every device
    assert default_layout(30, "auto").workers == MAX_AUTO_WORKERS


def test_gpu_discovery_without_nvidia_smi_need_not_import_torch(no_gpu: None, monkeypatch: pytest.MonkeyPatch) -> None:
    def torch_asked() -> None:
        raise AssertionError("torch was asked")

    monkeypatch.setattr("flexcnn.agents.gpus._torch_discovery", torch_asked)
    found = discover_gpus(ask_torch=False)
    assert (found.ids, found.source) == ((), "no nvidia-smi on PATH")
    assert default_layout(30, "auto").workers >= 1  # the layout asks the same way
    with pytest.raises(AssertionError, match="torch was asked"):
        discover_gpus()  # the agents' discovery still falls back to torch


def test_optuna_run_says_the_layout_it_chose(tmp_path: Path) -> None:
    # Two trials on this machine's cores: the start-up line names the workers and why.
    sweep = write_sweep(tmp_path, {"optim.lr": {"values": [0.003, 0.01]}}, run_cap=2)
    result = flexcnn_cli("optuna", "run", str(sweep), "--storage", str(tmp_path / "j.log"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--workers auto: " in result.stdout
    expected = min(2, layout.usable_cores())
    assert f"{expected} worker(s) x " in result.stdout
