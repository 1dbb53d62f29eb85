"""Search engines behind one protocol: what a worker asks for, what it reports, how a trial ends.

``OptunaEngine`` takes any Optuna sampler and pruner objects (one of each per worker, as
flexcnn's worker processes each build their own) over one in-memory storage, so a worker's
sampler sees the other workers' trials RUNNING with the values they reported so far, exactly
as a shared journal or RDB storage shows them. ``WandbEngine`` drives W&B's ``sweeps`` package
through a bridge process (wandb_bridge_server.py) in its own ``uvx`` environment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from flexcnn.search.space import SearchSpace

if TYPE_CHECKING:
    import optuna
    from optuna.pruners import BasePruner
    from optuna.samplers import BaseSampler

from bench.searchsim.space import REPO


class Engine(Protocol):
    def ask(self, worker: int) -> tuple[int, dict[str, Any]]:
        """A new trial for ``worker``: its id and parameters as Optuna stores them."""

    def report(self, trial: int, epoch: int, value: float) -> list[int]:
        """Record ``value`` at ``epoch`` (1-based); return the running trials to stop now."""

    def tell(self, trial: int, state: str, value: float | None) -> None:
        """End a trial: ``complete`` (value = its best), ``pruned`` or ``failed``."""

    def close(self) -> None: ...


class OptunaEngine:
    """Optuna's ask/tell on an in-memory study, one Study object (sampler, pruner) per worker."""

    def __init__(
        self,
        space: SearchSpace,
        workers: int,
        sampler: Callable[[int], BaseSampler],
        pruner: Callable[[int], BasePruner],
    ) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        self.space = space
        storage = optuna.storages.InMemoryStorage()
        self.studies = [
            optuna.create_study(
                storage=storage,
                study_name="sim",
                direction="maximize",
                sampler=sampler(w),
                pruner=pruner(w),
                load_if_exists=True,
            )
            for w in range(workers)
        ]
        self.trials: dict[int, tuple[optuna.Study, optuna.trial.Trial]] = {}

    def ask(self, worker: int) -> tuple[int, dict[str, Any]]:
        study = self.studies[worker]
        trial = study.ask()
        self.space.suggest(trial)  # the same calls, in the same order, as flexcnn's Objective makes
        self.trials[trial.number] = (study, trial)
        return trial.number, dict(trial.params)

    def report(self, trial: int, epoch: int, value: float) -> list[int]:
        _, t = self.trials[trial]
        t.report(value, epoch)
        return [trial] if t.should_prune() else []

    def tell(self, trial: int, state: str, value: float | None) -> None:
        from optuna.trial import TrialState

        study, t = self.trials.pop(trial)
        if state == "complete":
            study.tell(t, value)
        else:
            study.tell(t, state=TrialState.PRUNED if state == "pruned" else TrialState.FAIL)

    def close(self) -> None:
        pass


def find_uvx() -> str:
    """``uvx``: $FLEXCNN_UVX, PATH, next to this interpreter, .tools/ here or in the main checkout of a worktree."""
    candidates = [os.environ.get("FLEXCNN_UVX"), shutil.which("uvx"), str(Path(sys.executable).parent / "uvx")]
    candidates.append(str(REPO / ".tools" / "bin" / "uvx"))
    common = subprocess.run(
        ["git", "rev-parse", "--path-format=absolute", "--git-common-dir"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if common:
        candidates.append(str(Path(common).parent / ".tools" / "bin" / "uvx"))
    for c in candidates:
        if c and Path(c).is_file():
            return c
    raise FileNotFoundError("uvx not found (PATH, .tools/bin, $FLEXCNN_UVX): run `make setup` to install uv")


class WandbBridge:
    """A long-lived ``uvx --from sweeps python wandb_bridge_server.py`` process speaking JSON lines."""

    def __init__(self) -> None:
        server = Path(__file__).with_name("wandb_bridge_server.py")
        self.proc = subprocess.Popen(
            [find_uvx(), "--quiet", "--from", "sweeps", "python", str(server)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            # uvx's own environment, not ours; one BLAS thread: replays already run one per core.
            env={k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
            | {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
        )

    def call(self, **msg: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(msg) + "\n")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the W&B sweeps bridge exited ({self.proc.poll()}); run it by hand to see why")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


class WandbEngine:
    """W&B's controller logic (``next_run``, ``stop_runs``) for one simulated sweep, on a shared bridge."""

    def __init__(self, bridge: WandbBridge, sweep: dict[str, Any], space: SearchSpace, seed: int) -> None:
        self.bridge, self.space = bridge, space
        self.bridge.call(op="init", sweep=sweep, seed=seed)
        self.ids: dict[int, str] = {}
        self.numbers: dict[str, int] = {}

    def _encode(self, config: dict[str, Any]) -> dict[str, Any]:
        """W&B's values -> Optuna's stored values (list choices are JSON text there)."""
        out = {}
        for p in self.space.params:
            value = config[p.name]
            choices = getattr(p.distribution, "choices", None)
            out[p.name] = next(c for c in choices if p.decode(c) == value) if choices is not None else float(value)
        return out

    def ask(self, worker: int) -> tuple[int, dict[str, Any]]:
        reply = self.bridge.call(op="ask")
        number = len(self.ids)
        self.ids[number], self.numbers[reply["id"]] = reply["id"], number
        return number, self._encode(reply["config"])

    def report(self, trial: int, epoch: int, value: float) -> list[int]:
        reply = self.bridge.call(op="log", id=self.ids[trial], value=value)
        return [self.numbers[name] for name in reply["stop"]]

    def tell(self, trial: int, state: str, value: float | None) -> None:
        wandb_state = {"complete": "finished", "pruned": "killed", "failed": "failed"}[state]
        self.bridge.call(op="end", id=self.ids[trial], state=wandb_state)

    def close(self) -> None:
        pass  # the bridge outlives the sweep: the next seed reuses it
