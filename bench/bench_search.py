"""Live: time to a target val/acc on sweeps/flexcnn.yaml's space, flexcnn against a hand-written random search.

Both arms search the space of ``sweeps/flexcnn.yaml`` on mnist5k with 6 epochs per trial and
``data.limit`` training images (the learning-curve benchmark's settings, bench/searchsim), per seed,
alternating, on this machine:

* flexcnn: ``flexcnn optuna run`` on that sweep file with its defaults: TPE, the file's
  ``controller.pruner: asha`` (successive halving from epoch 1, the rule the simulator chose) and
  ``--workers auto`` (2 worker processes of 1 thread on 2 cores), stopping at ``metric.target``;
* baseline: ``bench/handwritten_random.py``, what our users write: random draws from the same
  ``parameters``, PIL images through a torchvision ``DataLoader``, the same FlexibleCNN class, no
  pruning, one process with torch's threads, stopping at the first epoch that reaches the target.

The figure is the wall-clock from launching the command to the target. The baseline's clock stops at
the first epoch that reaches it; flexcnn's when the first trial that reached it has finished (so it
trains on for up to 5 epochs the baseline does not count): a conservative comparison. An arm that
never reaches the target counts its whole run, a lower bound. Per-seed figures go to stderr.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import optuna
import yaml

from bench.common import Row
from flexcnn.search.storage import open_storage, parse_storage
from flexcnn.search.worker_argv import flexcnn_argv

REPO = Path(__file__).resolve().parents[1]
# About 1 configuration in 10 reaches 0.9356 on the curve benchmark (bench/searchsim/README.md).
TARGET = float(os.environ.get("FLEXCNN_BENCH_TARGET", "0.9356"))
SEEDS = tuple(range(int(os.environ.get("FLEXCNN_BENCH_SEEDS", "5"))))
EPOCHS, LIMIT, BUDGET = 6, 1000, 60
TIMEOUT = 900.0  # seconds per arm: a lower bound is reported after it


def _sweep(folder: Path) -> Path:
    sweep = yaml.safe_load((REPO / "sweeps" / "flexcnn.yaml").read_text())
    sweep["metric"]["target"] = TARGET
    sweep["run_cap"] = BUDGET
    sweep["command"] = ["flexcnn", "train", str(REPO / "configs" / "mnist5k.yaml"), "--args-json", "${args_json_file}"]
    sweep["parameters"] |= {
        "train.epochs": {"value": EPOCHS},
        "data.limit": {"value": LIMIT},
        "logging.wandb.num_samples": {"value": 0},
    }
    path = folder / "flexcnn-live.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def _flexcnn(folder: Path, sweep: Path, seed: int) -> tuple[float, bool, str]:
    name, storage = f"live-{seed}", folder / f"live-{seed}.log"
    cmd = flexcnn_argv("optuna", "run", str(sweep), "--study", name, "--storage", str(storage), "--seed", str(seed))
    cmd += ["--wandb-mode", "disabled"]  # the defaults: controller.pruner asha, --workers auto (2 x 1 thread here)
    cmd += ["--output-dir", str(folder / "runs")]
    launched, start = datetime.now(), time.perf_counter()
    try:
        subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True, timeout=TIMEOUT)
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"flexcnn seed {seed} failed ({exc.returncode}):\n{exc.stderr[-3000:]}") from None
    except subprocess.TimeoutExpired:
        pass  # the trials so far are in the storage
    total = time.perf_counter() - start
    journal = open_storage(parse_storage(str(storage)), create=False)
    trials = optuna.load_study(study_name=name, storage=journal).get_trials()
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None]
    hits = [t for t in done if t.value >= TARGET]  # type: ignore[operator]
    states = {s: sum(t.state.name == s for t in trials) for s in ("COMPLETE", "PRUNED", "FAIL")}
    account = (
        f"{len(trials)} trials ({states['COMPLETE']} complete, {states['PRUNED']} pruned, {states['FAIL']} failed)"
    )
    if not hits:
        return total, False, account + f", target not reached in {total:.0f} s"
    first = min(hits, key=lambda t: t.datetime_complete)  # type: ignore[arg-type,return-value]
    seconds = (first.datetime_complete - launched).total_seconds()  # type: ignore[operator]
    return seconds, True, account + f", trial {first.number} reached {first.value:.4f} at {seconds:.0f} s"


def _handwritten(folder: Path, seed: int) -> tuple[float, bool, str]:
    out = folder / f"handwritten-{seed}.json"
    cmd = [sys.executable, "-m", "bench.handwritten_random", "--seed", str(seed), "--target", str(TARGET)]
    cmd += ["--limit", str(LIMIT), "--epochs", str(EPOCHS), "--seconds", str(TIMEOUT), "--json", str(out)]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True, timeout=TIMEOUT + 300)
    result = json.loads(out.read_text())
    reached, n = result["reached"], len(result["trials"])
    if reached is None:
        total = time.perf_counter() - start
        return total, False, f"{n} trials, target not reached in {total:.0f} s"
    return (
        reached["seconds"],
        True,
        f"{n} trials, trial {reached['trial']} epoch {reached['epoch']} at {reached['seconds']:.0f} s",
    )


def run() -> list[Row]:
    ours: list[float] = []
    theirs: list[float] = []
    missed = {"ours": 0, "theirs": 0}
    with tempfile.TemporaryDirectory(prefix="flexcnn-bench-search-") as tmp:
        folder = Path(tmp)
        sweep = _sweep(folder)
        for seed in SEEDS:
            seconds, hit, text = _flexcnn(folder, sweep, seed)
            print(f"seed {seed}: flexcnn {text}", file=sys.stderr, flush=True)
            ours.append(seconds)
            missed["ours"] += not hit
            seconds, hit, text = _handwritten(folder, seed)
            print(f"seed {seed}: hand-written {text}", file=sys.stderr, flush=True)
            theirs.append(seconds)
            missed["theirs"] += not hit
    wins = sum(o < t for o, t in zip(ours, theirs, strict=True))
    print(
        "per seed (s): flexcnn "
        + ", ".join(f"{t:.0f}" for t in ours)
        + "; hand-written "
        + ", ".join(f"{t:.0f}" for t in theirs)
        + "; ratios "
        + ", ".join(f"{t / o:.2f}x" for o, t in zip(ours, theirs, strict=True))
        + f"; flexcnn sooner in {wins} of {len(SEEDS)}",
        file=sys.stderr,
        flush=True,
    )

    def note(n: int) -> str:
        return f" ({n} missed)" if n else ""

    return [
        Row(
            f"live median time to val/acc>={TARGET} (flexcnn.yaml space){note(missed['ours'])}",
            statistics.median(ours),
            statistics.median(theirs),
            "s",
            f"bench/handwritten_random.py, no pruning{note(missed['theirs'])}",
            aim="sooner in >=4 of 5 seeds",
            higher_is_better=False,
        ),
    ]
