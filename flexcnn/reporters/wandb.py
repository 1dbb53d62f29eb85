"""The W&B reporter: every run to a W&B dashboard, online or offline for ``wandb sync`` later.

``wandb_reporter_for(config)`` decides the mode (see ``resolve_mode``) and returns
a reporter, or None when W&B is disabled. The reporter opens one W&B run in
``on_start`` with the resolved config (nested, so the UI groups it), logs each
epoch's metrics against ``epoch``, and in ``on_end`` adds the test metrics, the
confusion matrix (chart and image), per-class, ROC, PR and sample-prediction
tables, and the best checkpoint as a model artifact, then finishes the run.

``import wandb`` happens here only, and only when a run is really logged. The
API key is never read into our code: login detection only asks whether one
exists.
"""

from __future__ import annotations

import contextlib
import logging
import netrc
import os
import re
import socket
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from flexcnn.config import RunConfig, deep_merge
from flexcnn.errors import ConfigError
from flexcnn.reporters.base import Reporter, RunInfo, RunResult

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

Mode = Literal["online", "offline", "disabled"]
DEFAULT_PROJECT = "flexcnn"
DEFAULT_BASE_URL = "https://api.wandb.ai"
# wandb.Table's row limit: ROC/PR curves are sampled at fewer thresholds for many classes.
MAX_TABLE_ROWS = 10_000
SAMPLE_MIN_PIXELS = 32  # tiny images (8x8 digits) are scaled up so the table shows them

_notice_lock = threading.Lock()
_offline_notice_shown = False


# --------------------------------------------------------------------------- mode


@dataclass(frozen=True)
class ModeDecision:
    """The resolved W&B mode and why, for one line of explanation to the user."""

    mode: Mode
    reason: str
    auto: bool = False  # chosen by `auto`: an online run may fall back to offline


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


_WANDB_MODES: dict[str, Mode] = {
    "online": "online",
    "run": "online",
    "offline": "offline",
    "dryrun": "offline",
    "disabled": "disabled",
    "shared": "online",
}


def _env_mode(env: Mapping[str, str]) -> Mode | None:
    """W&B's own switches: WANDB_MODE (dryrun = offline, run = online) and WANDB_DISABLED; blank is unset.

    An unknown WANDB_MODE is a ConfigError here: wandb.init would otherwise fail on it with a traceback.
    """
    if _truthy(env.get("WANDB_DISABLED")):
        return "disabled"
    raw = (env.get("WANDB_MODE") or "").strip()
    if raw and raw.lower() not in _WANDB_MODES:
        raise ConfigError(f"WANDB_MODE={raw!r} is not a W&B mode: use online, offline or disabled, or unset it")
    return _WANDB_MODES.get(raw.lower())


def base_url(env: Mapping[str, str]) -> str:
    """The W&B server this process would talk to."""
    return (env.get("WANDB_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


def logged_in(env: Mapping[str, str]) -> bool:
    """Whether W&B credentials exist (API key variable, identity token or a netrc entry).

    Only presence is checked; the key itself is never returned, printed or stored.
    """
    if env.get("WANDB_API_KEY") or env.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlsplit(base_url(env)).netloc
    if not host:
        return False
    # Same lookup order as wandb: $NETRC, then ~/.netrc, then ~/_netrc.
    candidates = [Path(env["NETRC"])] if env.get("NETRC") else [Path("~/.netrc"), Path("~/_netrc")]
    for path in candidates:
        path = path.expanduser()
        if not path.is_file():
            continue
        try:
            entry = netrc.netrc(str(path)).authenticators(host)
        except (netrc.NetrcParseError, OSError):
            return False
        return bool(entry and entry[2])
    return False


def server_reachable(env: Mapping[str, str], timeout: float = 2.0) -> bool:
    """A TCP connect to the W&B server, so a logged-in node without internet goes offline at once.

    wandb.init itself would wait up to 90 s before failing. Behind an HTTP(S)
    proxy a direct connect proves nothing, so the server counts as reachable.
    """
    if any(env.get(name) for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")):
        return True
    parts = urlsplit(base_url(env))
    if not parts.hostname:
        return False
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_mode(
    config: RunConfig,
    mode: str | None = None,
    env: Mapping[str, str] | None = None,
    *,
    reachable: Callable[[Mapping[str, str]], bool] = server_reachable,
) -> ModeDecision:
    """Decide online / offline / disabled for one run.

    Precedence: the ``mode`` argument (``--wandb-mode`` of the Optuna CLI), then
    ``logging.wandb.mode`` when the config sets it, then, under ``wandb agent``
    (``WANDB_SWEEP_ID`` set), ``auto``; otherwise the default ``disabled``.
    ``auto`` follows ``WANDB_MODE`` / ``WANDB_DISABLED`` when set, else goes
    online when credentials exist and the server answers, offline otherwise.
    """
    env = os.environ if env is None else env
    wb = config.logging.wandb
    if mode is not None:
        requested, source = mode, "requested"
    elif "mode" in wb.model_fields_set:
        requested, source = wb.mode, "logging.wandb.mode"
    elif env.get("WANDB_SWEEP_ID"):
        requested, source = "auto", "running under wandb agent"
    else:
        requested, source = wb.mode, "default"
    if requested not in ("auto", "online", "offline", "disabled"):
        raise ConfigError(f"W&B mode {requested!r} is not one of auto, online, offline, disabled")
    if requested != "auto":
        if requested == "disabled" and env.get("WANDB_SWEEP_ID"):
            log.warning("running under wandb agent but W&B is disabled (%s): the sweep will see no metrics", source)
        if requested == "online" and not logged_in(env):
            raise ConfigError(
                "W&B mode online but no credentials found: run `wandb login` or set WANDB_API_KEY, "
                "or use --wandb-mode offline (sync later with `wandb sync`)"
            )
        return ModeDecision(requested, source)  # type: ignore[arg-type]
    from_env = _env_mode(env)
    if from_env is not None:
        return ModeDecision(from_env, "WANDB_MODE/WANDB_DISABLED", auto=True)
    if not logged_in(env):
        return ModeDecision("offline", "no W&B login found in WANDB_API_KEY or netrc", auto=True)
    if not reachable(env):
        return ModeDecision("offline", f"W&B server {base_url(env)} is unreachable", auto=True)
    return ModeDecision("online", "logged in", auto=True)


# --------------------------------------------------------------------------- reporter


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
    decision = resolve_mode(config, mode)
    if decision.mode == "disabled":
        return None
    _env_mode(os.environ)  # wandb reads WANDB_MODE whatever mode it is given: refuse a bad one before training
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
    )
    return WandbReporter(settings)


def start_service_in_background() -> None:
    """Start W&B's service process now, so that wandb.init, after the data are loaded, finds it running.

    wandb.init would start it and wait for it (about 0.2 s of a 3 s trial start-up
    here); started first, the wait overlaps data loading and model building. The
    imports happen on the calling thread: two threads importing at once can deadlock.
    """
    if not (os.environ.get("WANDB_MODE") or "x").strip():
        return  # blank: wandb.setup() would choke on it; on_start fixes it before init
    import wandb
    from wandb.sdk.lib.service import service_connection  # noqa: F401 - the import wandb.setup() makes

    def setup() -> None:
        try:
            wandb.setup()
        except Exception as exc:  # wandb.init starts the service itself and reports what goes wrong
            log.debug("early W&B service start failed: %s", exc)

    threading.Thread(target=setup, name="wandb-service-start", daemon=True).start()


class WandbReporter(Reporter):
    """Logs one flexcnn run as one W&B run."""

    def __init__(self, settings: WandbRunSettings) -> None:
        self.settings = settings
        self.run: Any = None  # wandb.sdk.wandb_run.Run once started
        self.run_dir: Path | None = None
        self._restore_env: dict[str, str | None] = {}
        self._config: dict[str, Any] = {}

    # ------------------------------------------------------------- start

    def on_start(self, info: RunInfo) -> None:
        import wandb

        s = self.settings
        self.run_dir = Path(info.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        root = s.wandb_dir or (None if os.environ.get("WANDB_DIR") else self.run_dir)
        if "WANDB_MODE" in os.environ and not os.environ["WANDB_MODE"].strip():
            self._set_env("WANDB_MODE", s.mode)  # a blank WANDB_MODE means unset to us, but wandb rejects it
        config = self._config = deep_merge(info.config.to_dict(), s.extra_config)
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
            return wandb.init(mode="offline", settings=self._wandb_settings(wandb), **init)

    def _wandb_settings(self, wandb: Any) -> Any:
        settings: dict[str, Any] = {}
        if not any(k in os.environ for k in ("WANDB_SILENT", "WANDB_QUIET")):
            # Offline W&B prints five lines per run that our one notice replaces; online keep the URL.
            settings = {"silent": True} if self.settings.mode == "offline" else {"quiet": True}
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
        try:
            self._log_end(result)
        finally:
            self.run.finish(exit_code=1 if result.status == "failed" else 0)
            self._unset_env()

    def _log_end(self, result: RunResult) -> None:
        import wandb

        run = self.run
        run.summary.update({k: v for k, v in result.summary.items() if _is_scalar(v)})
        run.summary["status"] = result.status
        run.tags = (*[t for t in run.tags if t != result.status], result.status)
        media: dict[str, Any] = {}
        split = result.eval_split
        if result.report is not None and result.probs is not None and result.targets is not None:
            media.update(_evaluation_media(wandb, result, split))
        if result.samples is not None:
            media[f"{split}/samples"] = _samples_table(wandb, result)
        if media:
            run.log(media)
        if self.settings.log_model and result.checkpoint is not None and result.checkpoint.is_file():
            self._log_model(wandb, result)

    def _log_model(self, wandb: Any, result: RunResult) -> None:
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
        artifact.add_file(str(result.checkpoint), name="best.pt", policy="immutable", skip_cache=True)
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


# --------------------------------------------------------------------------- media


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


def _evaluation_media(wandb: Any, result: RunResult, split: str) -> dict[str, Any]:
    """Confusion matrix (chart + image), per-class table, ROC and PR curves of the evaluated split."""
    import torchmetrics.functional.classification as tmc

    assert result.report is not None and result.probs is not None and result.targets is not None
    probs, targets, classes = result.probs.float().cpu(), result.targets.cpu(), result.classes
    preds = probs.argmax(dim=1)
    media: dict[str, Any] = {
        f"{split}/confusion_matrix": wandb.plot.confusion_matrix(
            y_true=targets.tolist(),
            preds=preds.tolist(),
            class_names=classes,
            title=f"{split} confusion matrix",
        ),
        f"{split}/confusion_matrix_image": _confusion_image(wandb, result),
    }
    auroc = tmc.multiclass_auroc(probs, targets, num_classes=len(classes), average="none").tolist()
    per_class = wandb.Table(columns=["class", "precision", "recall", "f1", "acc", "auroc", "support"])
    for i, (name, row) in enumerate(result.report.per_class.items()):
        per_class.add_data(name, row["precision"], row["recall"], row["f1"], row["acc"], auroc[i], row["support"])
    media[f"{split}/per_class"] = per_class
    media[f"{split}/roc"] = _curve(wandb, *_roc_points(probs, targets, classes), x="fpr", y="tpr", split=split)
    media[f"{split}/pr"] = _curve(wandb, *_pr_points(probs, targets, classes), x="recall", y="precision", split=split)
    return media


def _thresholds(num_classes: int) -> int:
    # One row per class and threshold must fit in one wandb.Table.
    return max(11, min(201, MAX_TABLE_ROWS // max(num_classes, 1) - 1))


def _roc_points(probs: torch.Tensor, targets: torch.Tensor, classes: list[str]) -> tuple[list[list[Any]], str]:
    import torchmetrics.functional.classification as tmc

    fpr, tpr, _ = tmc.multiclass_roc(probs, targets, num_classes=len(classes), thresholds=_thresholds(len(classes)))
    return _rows(classes, fpr, tpr), "ROC"


def _pr_points(probs: torch.Tensor, targets: torch.Tensor, classes: list[str]) -> tuple[list[list[Any]], str]:
    import torchmetrics.functional.classification as tmc

    precision, recall, _ = tmc.multiclass_precision_recall_curve(
        probs, targets, num_classes=len(classes), thresholds=_thresholds(len(classes))
    )
    return _rows(classes, recall, precision), "Precision-recall"


def _rows(classes: list[str], xs: torch.Tensor, ys: torch.Tensor) -> list[list[Any]]:
    rows = []
    for c, name in enumerate(classes):
        for x, y in zip(xs[c].tolist(), ys[c].tolist(), strict=True):
            if x == x and y == y:  # drop NaN: thresholds where nothing was predicted
                rows.append([name, round(x, 4), round(y, 4)])
    return rows


def _curve(wandb: Any, rows: list[list[Any]], title: str, *, x: str, y: str, split: str) -> Any:
    """The same chart as wandb.plot.roc_curve / pr_curve, from torchmetrics' curves.

    wandb's own helpers import pandas and scikit-learn and compute exact curves
    with a point per sample; binned thresholds keep end-of-run logging cheap.
    """
    table = wandb.Table(columns=["class", x, y], data=rows)
    axis = {"fpr": "False positive rate", "tpr": "True positive rate", "recall": "Recall", "precision": "Precision"}
    return wandb.plot.plot_table(
        "wandb/area-under-curve/v0",
        table,
        {"x": x, "y": y, "class": "class"},
        {"title": f"{split} {title} curve", "x-axis-title": axis[x], "y-axis-title": axis[y]},
    )


def _confusion_image(wandb: Any, result: RunResult) -> Any:
    assert result.report is not None
    png = result.run_dir / "confusion.png"  # written by the run folder's FilesReporter
    if png.is_file():
        return wandb.Image(str(png))
    from PIL import Image

    from flexcnn.metrics import save_confusion_png

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "confusion.png"
        save_confusion_png(result.report.confusion, result.classes, str(path), title=f"{result.eval_split} confusion")
        with Image.open(path) as img:
            return wandb.Image(img.convert("RGB"))  # in memory: the temporary file goes away


def _samples_table(wandb: Any, result: RunResult) -> Any:
    """Evaluated images with their true and predicted class, wrong ones first."""
    assert result.samples is not None
    samples, classes = result.samples, result.classes
    table = wandb.Table(columns=["image", "true", "predicted", "confidence", "correct"])
    order = sorted(range(len(samples.targets)), key=lambda i: samples.targets[i] == samples.predictions[i])
    for i in order:
        true, pred = classes[samples.targets[i]], classes[samples.predictions[i]]
        image = wandb.Image(_to_hwc(samples.images[i]), caption=f"{true} -> {pred}")
        table.add_data(image, true, pred, round(float(samples.confidences[i]), 4), true == pred)
    return table


def _to_hwc(image: torch.Tensor) -> Any:
    """uint8 (C, H, W) -> numpy (H, W[, C]), scaled up by whole pixels when tiny."""
    height, width = image.shape[-2:]
    factor = max(1, -(-SAMPLE_MIN_PIXELS // max(height, width)))
    if factor > 1:
        image = image.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)
    array = image.permute(1, 2, 0).numpy()
    return array[:, :, 0] if array.shape[2] == 1 else array
