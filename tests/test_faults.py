"""Faults during `flexcnn train`: signals, kills mid-write, NaN/inf, out of memory, unwritable or full storage.

The contract: a run may fail, but it never leaves a torn file, never passes for a
result it did not reach, and a killed or stopped run resumes with ``--resume``
to exactly the metrics of an uninterrupted run (CPU, same seed).

Signals are real: the run is a subprocess, and a test-only ``sitecustomize``
(written to a temporary folder and put on ``PYTHONPATH``, so nothing ships in
the package) holds it at a chosen training batch or halfway through writing a
checkpoint, so the signal lands exactly there rather than wherever a timer
happens to fall. NaN/inf losses and out-of-memory errors are injected
in-process through the console entry point.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from flexcnn.checkpoint import load_checkpoint
from flexcnn.cli import main
from flexcnn.config import load_config
from flexcnn.errors import OutOfMemory, TrainingDiverged
from flexcnn.run import run
from tests.conftest import REPO, TINY

# Three epochs on 600 digits, one CPU thread: deterministic, and a few seconds per run.
FAULT_RUN = [
    *TINY,
    "train.epochs=3",
    "data.limit=600",
    "data.batch_size=32",
    "train.threads=1",
    "data.augment=light",
    "optim.scheduler=cosine",
]
BATCHES_PER_EPOCH = 600 // 32 + 1  # 19
RESULT_FILES = ("summary.json", "best.pt", "last.pt", "metrics.jsonl")

# The fault hook: imported by every Python process started with PYTHONPATH=<its folder>.
SITECUSTOMIZE = '''
import os, signal, time

_fault = os.environ.get("FLEXCNN_TEST_FAULT", "")


def _hold(marker):
    """Tell the test where we are, then wait for its signal (or kill ourselves)."""
    open(marker, "w").close()
    if os.environ.get("FLEXCNN_TEST_ACTION") == "selfkill":
        os.kill(os.getpid(), signal.SIGKILL)
    import flexcnn.signals

    # Until the test's signal: it interrupts here, or (inside a write, where flexcnn defers it) it is
    # only recorded, and the write goes on as flexcnn lets it.
    deadline = time.monotonic() + 120
    while flexcnn.signals.received_signal() is None and time.monotonic() < deadline:
        time.sleep(0.05)


if _fault.startswith("batch:"):  # batch:<n>:<marker>: hold at the n-th training step
    import torch

    _n, _marker = int(_fault.split(":")[1]), _fault.split(":", 2)[2]
    _real_zero_grad, _calls = torch.optim.Optimizer.zero_grad, [0]

    def _zero_grad(self, *args, **kwargs):
        _calls[0] += 1
        if _calls[0] == _n:
            _hold(_marker)
        return _real_zero_grad(self, *args, **kwargs)

    torch.optim.Optimizer.zero_grad = _zero_grad
elif _fault.startswith("write:"):  # write:<file name>:<n>:<marker>: hold halfway through its n-th write
    import io
    import flexcnn.checkpoint as _ckpt

    _, _name, _n, _marker = _fault.split(":", 3)
    _real_atomic_write, _writes = _ckpt.atomic_write, [0]

    def _atomic_write(path, write):
        if os.path.basename(str(path)) != _name:
            return _real_atomic_write(path, write)
        _writes[0] += 1
        if _writes[0] != int(_n):
            return _real_atomic_write(path, write)

        def torn(fh):
            buf = io.BytesIO()
            write(buf)
            data = buf.getvalue()
            fh.write(data[: len(data) // 2])
            fh.flush()
            os.fsync(fh.fileno())
            _hold(_marker)
            fh.write(data[len(data) // 2 :])

        return _real_atomic_write(path, torn)

    _ckpt.atomic_write = _atomic_write
'''


@pytest.fixture(scope="module")
def hook_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fault-hook")
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return folder


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The uninterrupted run every resumed run must match."""
    folder = tmp_path_factory.mktemp("straight") / "run"
    result = run(load_config(None, FAULT_RUN), run_dir=folder)
    assert result.status == "completed"
    return {"history": result.history, "summary": result.summary}


def start_train(run_dir: Path, hook_dir: Path, fault: str, action: str = "wait") -> subprocess.Popen[str]:
    """`flexcnn train` as a real process, with the fault hook armed."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(hook_dir), str(REPO)]),
        "FLEXCNN_TEST_FAULT": fault,
        "FLEXCNN_TEST_ACTION": action,
        "PYTHONUNBUFFERED": "1",
    }
    args = [sys.executable, "-m", "flexcnn", "train", "--output-dir", str(run_dir)]
    for override in FAULT_RUN:
        args += ["--set", override]
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(marker: Path, proc: subprocess.Popen[str], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (rc {proc.returncode}) before the fault point:\n{proc.stdout.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the run never reached the fault point")
        time.sleep(0.05)


def files_are_whole(run_dir: Path) -> None:
    """Every file in the folder parses; no torn checkpoint, summary or metrics file."""
    for path in run_dir.iterdir():
        if path.name.endswith(".pt"):
            load_checkpoint(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".jsonl":
            [json.loads(line) for line in path.read_text().splitlines()]


def resume_in_cli(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--resume", str(run_dir)])
    out = capsys.readouterr()
    return int(exit_info.value.code or 0), out.out + out.err


def assert_same_as_straight(run_dir: Path, straight: dict[str, object]) -> None:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    expected = straight["history"]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for got, want in zip(rows, expected, strict=True):  # type: ignore[call-overload]
        for key in ("train/loss", "train/acc", "val/loss", "val/acc"):
            assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-7), (key, got["epoch"])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    umask = os.umask(0o022)
    os.umask(umask)
    for name in RESULT_FILES:  # atomic writes keep the usual permissions, not mkstemp's 0600
        assert (run_dir / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    assert summary["test/acc"] == pytest.approx(straight["summary"]["test/acc"])  # type: ignore[index]
    assert summary["test/loss"] == pytest.approx(straight["summary"]["test/loss"], rel=1e-5)  # type: ignore[index]


def _stop(proc: subprocess.Popen[str], sig: signal.Signals) -> tuple[int, str]:
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    return proc.returncode, out


# --------------------------------------------------------------------------- signals mid-epoch


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_signal_mid_epoch_then_resume_matches_an_uninterrupted_run(
    sig: signal.Signals,
    tmp_path: Path,
    hook_dir: Path,
    straight: dict[str, object],
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_dir, marker = tmp_path / "run", tmp_path / "reached"
    proc = start_train(run_dir, hook_dir, f"batch:{BATCHES_PER_EPOCH + 5}:{marker}")  # epoch 2, batch 5
    wait_for(marker, proc)
    code, out = _stop(proc, sig)
    files_are_whole(run_dir)
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 1
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 1
    if sig == signal.SIGTERM:
        assert code == 130, out
        assert "Traceback" not in out
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "interrupted" and "--resume" in summary["reason"]
        assert "test/acc" not in summary  # an interrupted run does not pass for a finished one
    else:
        assert code == -signal.SIGKILL
        assert not (run_dir / "summary.json").exists()
    code, printed = resume_in_cli(run_dir, capsys)
    assert code == 0, printed
    assert_same_as_straight(run_dir, straight)


# --------------------------------------------------------------------------- signals while a checkpoint is written


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_kill_while_writing_a_checkpoint_never_leaves_a_torn_one(
    how: str, tmp_path: Path, hook_dir: Path, straight: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, marker = tmp_path / "run", tmp_path / "reached"
    # Halfway through the second write of last.pt (end of epoch 2), with half the bytes on disk.
    proc = start_train(run_dir, hook_dir, f"write:last.pt:2:{marker}", "selfkill" if how == "SIGKILL" else "wait")
    if how == "SIGKILL":
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == -signal.SIGKILL, out
        assert marker.exists()
        kept_epoch = 1  # the previous last.pt, whole; never the torn half of epoch 2's
    else:
        wait_for(marker, proc)
        code, out = _stop(proc, signal.SIGTERM)
        assert code == 130, out
        assert not list(run_dir.glob(".*.tmp")), "a write the signal waited for leaves no temporary file"
        kept_epoch = 2  # SIGTERM waits for the epoch's record and checkpoint (flexcnn.signals), then stops
    files_are_whole(run_dir)
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == kept_epoch
    code, printed = resume_in_cli(run_dir, capsys)
    assert code == 0, printed
    assert not list(run_dir.glob(".*.tmp")), "resume clears temporary files a kill left behind"
    # Epoch 2 ran to its end before the kill, so metrics.jsonl may hold it; resume rewrites from the checkpoint.
    assert_same_as_straight(run_dir, straight)


# --------------------------------------------------------------------------- NaN, inf, out of memory


def _train_in_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *args])
    out = capsys.readouterr()
    return int(exit_info.value.code or 0), out.out + out.err


def _overrides(run_dir: Path, extra: list[str] = ()) -> list[str]:  # type: ignore[assignment]
    args = ["--output-dir", str(run_dir)]
    for override in [*FAULT_RUN, *extra]:
        args += ["--set", override]
    return args


class Killed(BaseException):
    """Stands for SIGKILL in-process: nothing in run() catches it, so no file is tidied up."""


def test_a_kill_right_after_last_pt_is_written_leaves_no_hole_in_the_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flexcnn.run as run_module

    real_save = run_module.save_checkpoint

    def save_then_die(path: Path, state: dict) -> None:
        real_save(path, state)
        if Path(path).name == "last.pt" and state["epoch"] == 2:
            raise Killed

    config = load_config(None, [*TINY, "train.epochs=3"])
    monkeypatch.setattr(run_module, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        run(config, run_dir=tmp_path)
    monkeypatch.setattr(run_module, "save_checkpoint", real_save)
    resumed = run(config, run_dir=tmp_path, resume=True)
    assert resumed.status == "completed"
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2, 3]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_loss_stops_with_the_reason(
    bad: float, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import flexcnn.run as run_module

    real_make_loss = run_module.make_loss
    calls = [0]

    def poisoned(*args: object, **kwargs: object) -> torch.nn.Module:
        loss_fn = real_make_loss(*args, **kwargs)

        def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            calls[0] += 1
            value = loss_fn(logits, target)
            return value * bad if calls[0] > BATCHES_PER_EPOCH + 3 else value  # epoch 2, batch 4

        return loss  # type: ignore[return-value]

    monkeypatch.setattr(run_module, "make_loss", poisoned)
    code, printed = _train_in_cli(_overrides(tmp_path / "run"), capsys)
    assert code == 1, printed
    assert "Traceback" not in printed
    (line,) = [ln for ln in printed.splitlines() if ln.startswith("error:")]
    assert "run failed" in line and ("nan" in line.lower() or "inf" in line.lower()) and "epoch 2" in line
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and "epoch 2" in summary["reason"]
    assert "test/acc" not in summary  # a diverged run reports no test metrics
    files_are_whole(tmp_path / "run")
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1  # the last good epoch stays resumable


def test_non_finite_loss_is_training_diverged_in_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import flexcnn.run as run_module

    real_make_loss = run_module.make_loss

    def nan_loss(*args: object, **kwargs: object) -> object:
        loss_fn = real_make_loss(*args, **kwargs)
        return lambda logits, target: loss_fn(logits, target) * float("nan")

    monkeypatch.setattr(run_module, "make_loss", nan_loss)
    with pytest.raises(TrainingDiverged):
        run(load_config(None, FAULT_RUN), run_dir=tmp_path / "run")


def test_out_of_memory_fails_with_a_batch_size_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from flexcnn.models.flexible_cnn import FlexibleCNN

    def forward(self: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(FlexibleCNN, "forward", forward)
    code, printed = _train_in_cli(_overrides(tmp_path / "run"), capsys)
    assert code == 1, printed
    assert "Traceback" not in printed
    (line,) = [ln for ln in printed.splitlines() if ln.startswith("error:")]
    assert "out of memory" in line and "data.batch_size=32" in line and "lower data.batch_size" in line
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and "test/acc" not in summary
    assert not (tmp_path / "run" / "best.pt").exists()
    with pytest.raises(OutOfMemory):
        run(load_config(None, FAULT_RUN), run_dir=tmp_path / "again")


# --------------------------------------------------------------------------- storage


@pytest.fixture
def unwritable(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """An output folder that cannot be written: under a regular file, or read-only."""
    if request.param == "under-a-file":
        (tmp_path / "file").write_text("x")
        yield tmp_path / "file" / "runs"
        return
    if os.geteuid() == 0:  # root ignores file modes; sysfs refuses new folders even to root
        yield Path("/sys/flexcnn-fault-test/runs")
        return
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o500)
    yield folder / "runs"
    folder.chmod(0o700)


@pytest.mark.parametrize("unwritable", ["under-a-file", "read-only"], indirect=True)
@pytest.mark.parametrize("flag", ["--output-dir", "logging.output_dir"])
def test_unwritable_output_folder_exits_2_before_training(
    unwritable: Path, flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = (
        ["--output-dir", str(unwritable)] if flag == "--output-dir" else ["--set", f"logging.output_dir={unwritable}"]
    )
    code, printed = _train_in_cli([*args, "--set", "logging.progress=false"], capsys)
    assert code == 2, printed
    assert "Traceback" not in printed
    (line,) = [ln for ln in printed.splitlines() if ln.startswith("error:")]
    assert "cannot" in line and str(unwritable.parent) in line and "--output-dir" in line
    assert "epoch" not in printed  # refused before any training


def _limit_file_size(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.slow
def test_file_size_limit_mid_run_fails_cleanly(tmp_path: Path) -> None:
    """`ulimit -f`: the checkpoint write fails mid-run; the run is recorded failed, no file is torn."""
    run_dir = tmp_path / "run"
    # ~36k parameters: checkpoints of ~150 KB, while config.yaml, metrics and the summary stay under 8 KB.
    extra = ["model.num_filters=[32,64]", "model.dense_units=[128]"]
    proc = subprocess.run(
        [sys.executable, "-m", "flexcnn", "train", *_overrides(run_dir, extra)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: _limit_file_size(64 * 1024),
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert "cannot write to the run folder" in line and "File too large" in line
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "test/acc" not in summary
    assert not (run_dir / "best.pt").exists() and not (run_dir / "last.pt").exists()
    assert not list(run_dir.glob(".*.tmp"))
    files_are_whole(run_dir)


def test_fault_hook_is_not_in_the_package() -> None:
    """The hook lives in this test only; the shipped package has no fault switches."""
    package = REPO / "flexcnn"
    assert not any("FLEXCNN_TEST_FAULT" in p.read_text() for p in package.rglob("*.py"))
