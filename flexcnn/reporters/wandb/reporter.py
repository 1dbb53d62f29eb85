"""The W&B reporter: one flexcnn run as one W&B run, online or offline for ``wandb sync`` later.

``wandb_reporter_for(config)`` decides the mode (see ``mode.resolve_mode``) and
returns a reporter, or None when W&B is disabled. The reporter opens one W&B
run in ``on_start`` with the resolved config (nested, so the UI groups it),
logs each epoch's metrics against ``epoch``, and in ``on_end`` adds the test
metrics, the end-of-run media (``media.end_of_run_media``) and the best
checkpoint as a model artifact, then finishes the run.

``import wandb`` happens only when a run is really logged.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flexcnn.config import RunConfig, deep_merge
from flexcnn.reporters.base import Reporter, RunInfo, RunResult
from flexcnn.reporters.wandb.media import end_of_run_media
from flexcnn.reporters.wandb.mode import Mode, env_mode, resolve_mode
from flexcnn.reporters.wandb.preemption import StopRequests, server_asked_to_stop
from flexcnn.reporters.wandb.run_config import run_config, sweep_parameter_names
from flexcnn.reporters.wandb.service import start_service_in_background
from flexcnn.secret_files import load_secret_files
from flexcnn.signals import interrupt_exit_code

# The package's logger, not this module's: users see and filter one "flexcnn.reporters.wandb".
log = logging.getLogger("flexcnn.reporters.wandb")

DEFAULT_PROJECT = "flexcnn"

# One offline notice per process: Optuna runs many trials in one, and the sync command is the same.
_notice_lock = threading.Lock()
_offline_notice_shown = False


@dataclass
class WandbRunSettings:
    """Everything wandb.init needs besides the config, resolved before the run starts."""

    mode: Mode
    reason: str = ""
    fallback_offline: bool = False  # auto mode: if online init fails, log offline instead of failing
    project: str | None = DEFAULT_PROJECT
    entity: str | None = None
    group: str | None = None
    name: str | None = None
    tags: list[str] = field(default_factory=list)
    extra_config: dict[str, Any] = field(default_factory=dict)
    wandb_dir: Path | None = None  # None: the run folder (self-contained), unless WANDB_DIR is set
    num_samples: int = 32
    log_model: bool = True
    sweep: bool = False  # started by `wandb agent`: an interrupted run is preempted and requeued


def wandb_reporter_for(
    config: RunConfig,
    *,
    group: str | None = None,
    name: str | None = None,
    tags: Sequence[str] = (),
    extra_config: Mapping[str, Any] | None = None,
    mode: str | None = None,
) -> WandbReporter | None:
    """A W&B reporter for ``config``, or None when the resolved mode is ``disabled``.

    ``mode`` overrides ``logging.wandb.mode``; ``group``/``name`` override the
    config's; ``tags`` add to it; ``extra_config`` is merged into the run's
    config (e.g. ``{"optuna": {"study": ..., "trial": n, "params": {...}}}``).
    Unset project/entity/group/name/tags fall back to the usual ``WANDB_*``
    variables.
    """
    # The CLI has done this already; a program calling run() itself gets WANDB_API_KEY_FILE honoured too,
    # or logged_in() would count the file while wandb, which reads only WANDB_API_KEY, could not log in.
    load_secret_files()
    decision = resolve_mode(config, mode)
    if decision.mode == "disabled":
        return None
    env_mode(os.environ)  # wandb reads WANDB_MODE whatever mode it is given: refuse a bad one before training
    start_service_in_background()
    wb, env = config.logging.wandb, os.environ
    under_sweep = bool(env.get("WANDB_SWEEP_ID"))
    env_tags = [t.strip() for t in env.get("WANDB_TAGS", "").split(",") if t.strip()]
    settings = WandbRunSettings(
        mode=decision.mode,
        reason=decision.reason,
        fallback_offline=decision.auto,
        # Under an agent the sweep owns the project; passing one only earns a warning.
        project=None if under_sweep else (wb.project or env.get("WANDB_PROJECT") or DEFAULT_PROJECT),
        entity=wb.entity,
        group=group or wb.group,
        name=name or wb.name or env.get("WANDB_NAME") or config.logging.run_name,
        tags=list(dict.fromkeys([*wb.tags, *tags, *env_tags])),
        extra_config=dict(extra_config or {}),
        num_samples=wb.num_samples,
        log_model=wb.log_model,
        sweep=under_sweep,
    )
    return WandbReporter(settings)


class WandbReporter(Reporter):
    """Logs one flexcnn run as one W&B run."""

    def __init__(self, settings: WandbRunSettings) -> None:
        self.settings = settings
        self.run: Any = None  # wandb.sdk.wandb_run.Run once started
        self.run_dir: Path | None = None
        self._restore_env: dict[str, str | None] = {}
        self._config: dict[str, Any] = {}
        self._stop_requests = StopRequests()  # W&B's server asked the run to stop (UI, sweep early termination)

    # ------------------------------------------------------------- start

    def on_start(self, info: RunInfo) -> None:
        import wandb

        s = self.settings
        # Absolute: the artifact and staged files are referenced by path, and `wandb sync` may run elsewhere.
        self.run_dir = Path(info.run_dir).absolute()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        root = self._wandb_root()
        if "WANDB_MODE" in os.environ and not os.environ["WANDB_MODE"].strip():
            self._set_env("WANDB_MODE", s.mode)  # a blank WANDB_MODE means unset to us, but wandb rejects it
        self._config = deep_merge(info.config.to_dict(), s.extra_config)
        config = run_config(self._config, mode=s.mode, swept=sweep_parameter_names())
        run_id = self._resume_id(info)
        init: dict[str, Any] = {
            "project": s.project,
            "entity": s.entity,
            "group": s.group,
            "name": s.name or self.run_dir.name,
            "tags": s.tags or None,
            "job_type": "train",
            "config": config,
            "dir": str(root) if root is not None else None,
            "reinit": "create_new",  # Optuna runs many trials, maybe in threads, in one process
        }
        if run_id:
            init.update(id=run_id, resume="allow")
        elif s.sweep:
            init["resume"] = "allow"  # the agent's run id (WANDB_RUN_ID): a requeued run continues its history
        try:
            self.run = self._init(wandb, init)
        except BaseException:
            self._unset_env()
            raise
        # Tables are staged as artifact files before upload; offline they must stay with the run
        # until `wandb sync`, so stage them inside its folder too. Set after init: wandb reads it
        # when staging, and a WANDB_* variable changed between wandb.setup() and init earns a warning.
        if root is not None and not os.environ.get("WANDB_DATA_DIR"):
            self._set_env("WANDB_DATA_DIR", str(Path(root) / "wandb" / "data"))
        (self.run_dir / "wandb-run-id").write_text(self.run.id + "\n")
        self._say_if_started_over(info)
        self._define_metrics()
        self.run.summary.update(
            {
                **info.parameter_counts,
                "data/train_size": info.train_size,
                "data/val_size": info.val_size,
                "data/test_size": info.test_size,
                "data/num_classes": len(info.classes),
                "device": info.device,
                "run_dir": str(self.run_dir),
            }
        )
        if s.mode == "offline":
            self._offline_notice()

    def _wandb_root(self) -> Path | None:
        """Where the W&B run's files go: the run folder, unless WANDB_DIR (None: wandb reads it) says otherwise.

        ``wandb agent`` sets WANDB_DIR to its working folder when it is unset; that one is
        its default, not a choice, and the run folder keeps the run's files as everywhere else.
        """
        if self.settings.wandb_dir is not None:
            return Path(self.settings.wandb_dir).absolute()
        chosen = os.environ.get("WANDB_DIR")
        if chosen and not (self.settings.sweep and Path(chosen).resolve() == Path.cwd().resolve()):
            return None
        return self.run_dir

    def _init(self, wandb: Any, init: dict[str, Any]) -> Any:
        s = self.settings
        try:
            return wandb.init(mode=s.mode, settings=self._wandb_settings(wandb), **init)
        except Exception as exc:
            if s.mode != "online" or not s.fallback_offline:
                raise
            # auto chose online, but the server refused us: keep training, log offline.
            log.warning("W&B online init failed (%s); logging offline instead", type(exc).__name__)
            s.mode, s.reason = "offline", f"online init failed ({type(exc).__name__})"
            init["config"] = run_config(init["config"], mode="offline")
            return wandb.init(mode="offline", settings=self._wandb_settings(wandb), **init)

    def _wandb_settings(self, wandb: Any) -> Any:
        settings: dict[str, Any] = {}
        if not any(k in os.environ for k in ("WANDB_SILENT", "WANDB_QUIET")):
            # Offline W&B prints five lines per run that our one notice replaces; online keep the URL.
            settings = {"silent": True} if self.settings.mode == "offline" else {"quiet": True}
        settings["stop_fn"] = self._stop_requests
        # wandb reads WANDB_INIT_TIMEOUT once per process; Optuna runs many trials in one.
        with contextlib.suppress(KeyError, ValueError):
            settings["init_timeout"] = float(os.environ["WANDB_INIT_TIMEOUT"])
        return wandb.Settings(**settings)

    def _resume_id(self, info: RunInfo) -> str | None:
        """Continue the same W&B run when flexcnn resumes a run folder (not under an agent)."""
        assert self.run_dir is not None
        id_file = self.run_dir / "wandb-run-id"
        if info.start_epoch > 0 and id_file.is_file() and not os.environ.get("WANDB_RUN_ID"):
            text = id_file.read_text().strip()
            return text if re.fullmatch(r"[a-z0-9]{1,64}", text) else None
        return None

    def _say_if_started_over(self, info: RunInfo) -> None:
        """A requeued sweep run whose run folder is on another machine starts over: say so (online only).

        Offline there is no server to ask whether the run id has history already.
        """
        if not self.settings.sweep or info.start_epoch > 0 or not getattr(self.run, "resumed", False):
            return
        if int(getattr(self.run, "starting_step", 0) or 0) > 0:
            log.warning(
                "W&B run %s was preempted before, but its run folder (and last.pt) is not under %s on this "
                "machine: training starts over from epoch 1, and its W&B history repeats the epochs of the "
                "earlier attempt. Put logging.output_dir on storage every agent shares to resume instead.",
                self.run.id,
                self.run_dir.parent if self.run_dir is not None else "logging.output_dir",
            )

    def _define_metrics(self) -> None:
        run = self.run
        run.define_metric("epoch")
        run.define_metric("*", step_metric="epoch")  # every chart's x-axis is the epoch
        run.define_metric("val/acc", step_metric="epoch", summary="max")
        run.define_metric("val/f1_macro", step_metric="epoch", summary="max")
        run.define_metric("val/loss", step_metric="epoch", summary="min")

    def _offline_notice(self) -> None:
        global _offline_notice_shown
        sync_dir = Path(self.run.dir).parent
        with _notice_lock:
            first, _offline_notice_shown = not _offline_notice_shown, True
        if first:
            log.warning(
                "W&B is logging offline (%s). Upload later with: wandb sync %s  "
                "(or all runs: wandb sync <output_dir>/*/wandb/offline-run-*)",
                self.settings.reason,
                sync_dir,
            )
        else:
            log.debug("W&B offline run in %s", sync_dir)

    # ------------------------------------------------------------- epochs

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.run.log({"epoch": epoch + 1, **metrics})

    # ------------------------------------------------------------- end

    def on_end(self, result: RunResult) -> None:
        if self.run is None:
            return
        # A sweep run stopped by a signal is preempted (see .preemption): marked so, finished with
        # 128 + the signal (nonzero), and W&B requeues it; its resumed attempt continues from last.pt.
        preempted = self._preempted(result)
        try:
            self._log_end(result, preempted=preempted)
        finally:
            if preempted:
                self.run.mark_preempting()
            self.run.finish(exit_code=interrupt_exit_code() if preempted else int(result.status == "failed"))
            self._unset_env()

    def _preempted(self, result: RunResult) -> bool:
        """An interrupted sweep run that W&B itself did not ask to stop."""
        if not (self.settings.sweep and result.status == "interrupted"):
            return False
        asked = self._stop_requests.requested.is_set()
        if asked or (self.settings.mode == "online" and server_asked_to_stop(self.run)):
            result.extra["stopped_by_wandb"] = True  # `flexcnn train` exits 0, as for a pruned run
            return False
        return True

    def _log_end(self, result: RunResult, *, preempted: bool = False) -> None:
        run = self.run
        run.summary.update({k: v for k, v in result.summary.items() if _is_scalar(v)})
        status = "stopped" if result.extra.get("stopped_by_wandb") else result.status
        run.summary["status"] = status
        run.tags = (*[t for t in run.tags if t != status], status)
        media = end_of_run_media(result)
        if media:
            run.log(media)
        # A preempted run logs its model when its requeued attempt ends, not within the grace period.
        if self.settings.log_model and not preempted and result.checkpoint is not None and result.checkpoint.is_file():
            self._log_model(result)

    def _log_model(self, result: RunResult) -> None:
        import wandb

        assert result.checkpoint is not None
        config = self._config
        metadata = {
            "monitor": result.monitor,
            "best_value": result.best_value,
            "best_epoch": result.best_epoch,
            "status": result.status,
            "classes": result.classes,
            "model_kind": config.get("model", {}).get("kind"),
            "data_source": config.get("data", {}).get("source"),
            **{k: v for k, v in result.summary.items() if k.startswith(f"{result.eval_split}/") and _is_scalar(v)},
        }
        artifact = wandb.Artifact(f"model-{self.run.id}", type="model", metadata=metadata)
        # immutable: best.pt is final once the run ends, so reference it in place instead of
        # copying it (a ResNet50 checkpoint is ~100 MB) and keep the run folder self-contained.
        # By absolute path: `wandb sync` reads it from there, whichever folder it runs in.
        checkpoint = result.checkpoint.absolute()
        artifact.add_file(str(checkpoint), name="best.pt", policy="immutable", skip_cache=True)
        self.run.log_artifact(artifact, aliases=["best", "latest"])

    # ------------------------------------------------------------- env

    def _set_env(self, key: str, value: str) -> None:
        self._restore_env.setdefault(key, os.environ.get(key))
        os.environ[key] = value

    def _unset_env(self) -> None:
        for key, old in self._restore_env.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
        self._restore_env.clear()


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)
