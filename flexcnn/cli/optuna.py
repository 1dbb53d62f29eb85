"""``flexcnn optuna run|worker|status|best``: Optuna studies driven by W&B sweep YAMLs."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import click

from flexcnn.search.pruners import PRUNERS
from flexcnn.search.samplers import SAMPLERS
from flexcnn.search.worker_argv import STORAGE_ENV

if TYPE_CHECKING:
    import optuna

    from flexcnn.search.artifacts import ArtifactTarget
    from flexcnn.search.storage import StorageSpec
    from flexcnn.search.workers import WorkerOptions

STORAGE_HELP = (
    "Study storage: a journal file (PATH.log, PATH.journal, journal:PATH; default ./optuna-journal.log), "
    "sqlite:///PATH, or postgresql://USER:PASS@HOST/DB for many machines (env FLEXCNN_STORAGE; "
    "PGPASSWORD or PGPASSWORD_FILE for a password not in the URL)."
)

sweep_argument = click.argument("sweep_path", metavar="SWEEP.yaml", type=click.Path(dir_okay=False, path_type=Path))
study_option = click.option("--study", "study_name", metavar="NAME", help="Study name (default: the sweep's name).")
storage_option = click.option("--storage", metavar="URL", envvar=STORAGE_ENV, help=STORAGE_HELP)


class WorkerCount(click.ParamType):
    """``--workers``: a positive count, or ``auto`` (None: decided once the study's plan is known)."""

    name = "N|auto"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int | None:
        if value is None or isinstance(value, int):
            return value
        text = str(value).strip().lower()
        if text == "auto":
            return None
        if text.isdigit() and int(text) >= 1:
            return int(text)
        self.fail(f"{value!r} is not a positive number of workers or 'auto'", param, ctx)


WORKERS = WorkerCount()
SEED_HELP = "Sampler seed: worker k samples with SeedSequence(seed)'s k-th child; trials keep their config seed."
ARTIFACTS_HELP = (
    "Where trials' confusion.png and best.pt go as Optuna artifacts, for optuna-dashboard: a folder, "
    "s3://BUCKET (needs boto3) or none (default: STORAGE_FILE-artifacts/ next to a journal or SQLite file)."
)
objective_option = click.option(
    "--objective",
    "objectives",
    multiple=True,
    metavar="NAME[:GOAL]",
    help="Repeat for a multi-objective study (replaces metric and controller.objectives): "
    "val/acc|val/loss|val/f1_macro, params (trainable), params/total, latency_ms; e.g. "
    "--objective val/acc:maximize --objective params:minimize.",
)
artifacts_option = click.option("--artifacts", metavar="DIR|s3://BUCKET|none", help=ARTIFACTS_HELP)


def _trial_options(func):  # type: ignore[no-untyped-def]
    """Options shared by ``run`` and ``worker``."""
    options = [
        sweep_argument,
        study_option,
        storage_option,
        click.option("--n-trials", type=click.IntRange(min=1), help="Finished trials to reach (default: run_cap)."),
        click.option(
            "--timeout", type=click.FloatRange(min=1), metavar="SECONDS", help="Stop starting trials after this."
        ),
        click.option(
            "--sampler",
            type=click.Choice(SAMPLERS),
            help="Override the sampler (default from method: grid, random, bayes=tpe).",
        ),
        click.option(
            "--pruner",
            type=click.Choice(PRUNERS),
            help="Override the pruner (default: the sweep's controller.pruner, else hyperband, W&B's rule, when "
            "early_terminate is set, else none; optuna-hyperband is Optuna's HyperbandPruner; asha, successive "
            "halving from epoch 1, reached targets soonest in bench/searchsim).",
        ),
        click.option(
            "--wandb-mode",
            type=click.Choice(["auto", "online", "offline", "disabled"]),
            help="One W&B run per trial, grouped by study (default: the config's logging.wandb.mode).",
        ),
        click.option("--seed", type=int, help=SEED_HELP),
        click.option(
            "--threads", type=click.IntRange(min=1), help="CPU threads per worker (default: cores / workers)."
        ),
        click.option(
            "--max-failures",
            type=click.IntRange(min=1),
            default=5,
            show_default=True,
            help="A worker stops after this many consecutive failed trials.",
        ),
        click.option(
            "--heartbeat",
            type=click.IntRange(min=1),
            default=30,
            show_default=True,
            metavar="SECONDS",
            help="RDB storages: heartbeat interval; a trial silent for 3x this is failed and re-queued.",
        ),
        click.option(
            "--output-dir",
            type=click.Path(file_okay=False, path_type=Path),
            help="Trial folders go in OUTPUT_DIR/<study>/trial-<n> (default: the config's logging.output_dir).",
        ),
        objective_option,
        artifacts_option,
    ]
    for option in reversed(options):  # decorators apply bottom-up; keep the help in this order
        func = option(func)
    return func


@click.group("optuna")
def optuna_group() -> None:
    """Optuna studies from a W&B sweep YAML: pruning, parallel workers, shared storage, no W&B server needed."""


@optuna_group.command("run")
@_trial_options
@click.option(
    "--workers",
    type=WORKERS,
    default="auto",
    show_default=True,
    help="Worker processes here; auto: one per usable core (at most 8 and the trial budget), one when "
    "the trials train on a GPU.",
)
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True, help="Leaderboard rows at the end.")
def run_command(workers: int | None, top: int, **kwargs: object) -> None:
    """Run the study for SWEEP.yaml with K worker processes, then print the leaderboard."""
    from flexcnn.hardware import threads_per_worker
    from flexcnn.search.artifacts import artifact_target
    from flexcnn.search.fanout import run_workers
    from flexcnn.search.layout import default_layout
    from flexcnn.search.objectives import describe
    from flexcnn.search.storage import open_storage, parse_storage
    from flexcnn.search.study import open_study
    from flexcnn.search.sweep_file import load_sweep
    from flexcnn.search.workers import worker_plan

    opts = _worker_options(kwargs)
    spec = parse_storage(opts.storage)
    # Children get an unambiguous URL: journal:ABSOLUTE_PATH works whatever the file's suffix.
    opts.storage = spec.url if spec.kind == "rdb" else f"journal:{Path(spec.url).resolve()}"
    sweep = load_sweep(opts.sweep_path)
    name = opts.study_name or sweep.default_study_name
    opts.study_name = name
    artifacts = artifact_target(opts.artifacts, spec)
    artifacts.open()  # a folder that cannot be made fails here, not in every worker
    opts.artifacts = artifacts.option  # absolute: the workers resolve it the same way
    storage = open_storage(spec)
    plan = worker_plan(storage, name, sweep, opts)
    study = open_study(storage, name, plan, update_budget=opts.n_trials is not None)
    # Workers read these back from the study; passing them keeps every worker on one plan.
    opts.n_trials, opts.sampler, opts.pruner = plan.settings.n_trials, plan.settings.sampler, plan.settings.pruner
    opts.objectives = tuple(plan.settings.objectives)
    notices = list(plan.notices)
    if workers is None:
        layout = default_layout(plan.settings.n_trials, str(plan.base_tree["train"]["device"]))
        workers, notices = layout.workers, [layout.why, *notices]
    if opts.threads is None:
        opts.threads = threads_per_worker(workers)
    click.echo(
        f"study {name!r} on {spec.describe()}: {describe(plan.settings.specs)}, "
        f"sampler {plan.settings.sampler}, pruner {plan.settings.pruner}, {plan.settings.n_trials} trials, "
        f"{workers} worker(s) x {opts.threads} thread(s)"
    )
    for notice in notices:
        click.echo(notice)
    _echo_tools(spec, artifacts)
    code = run_workers(opts, workers, study)
    _print_summary(study, top)
    if code:
        sys.exit(code)


@optuna_group.command("worker")
@_trial_options
@click.option("--worker-index", type=click.IntRange(min=0), default=0, hidden=True)
@click.option("--label", default=None, hidden=True)
def worker_command(worker_index: int, label: str | None, **kwargs: object) -> None:
    """Join (or create) the study and run its trials in this process until it has N finished trials.

    Start one per GPU or machine against a shared storage. SIGTERM lets the
    current trial finish its epoch, records and re-queues it, and exits 75 (0
    when the study is finished anyway), so a scheduler knows to start it again.
    """
    import socket

    from flexcnn.search.workers import install_stop_handlers, run_worker

    opts = _worker_options(kwargs)
    opts.worker_index = worker_index
    opts.label = label or f"{socket.gethostname()}:{worker_index}"
    stop = threading.Event()
    install_stop_handlers(stop, label=opts.label)
    # `optuna run` names its workers and says the notices once; a worker started by hand says them.
    report = run_worker(opts, stop, notices=label is None)
    ran = ", ".join(f"{v} {k}" for k, v in sorted(report.ran.items())) or "no trials"
    click.echo(f"[{opts.label}] done ({ran}): {report.reason}")
    if report.exit_code:
        sys.exit(report.exit_code)


@optuna_group.command("status")
@storage_option
@study_option
@artifacts_option
def status_command(storage: str | None, study_name: str | None, artifacts: str | None) -> None:
    """Trials by state (all studies in the storage when --study is not given)."""
    import optuna

    from flexcnn.search.artifacts import artifact_target
    from flexcnn.search.storage import open_storage, parse_storage
    from flexcnn.search.study import format_counts, load_study, state_counts, stored_settings

    spec = parse_storage(storage)
    backend = open_storage(spec, create=False)
    names = [study_name] if study_name else optuna.get_all_study_names(backend)
    if not names:
        click.echo("no studies in this storage")
        return
    for name in names:
        study = load_study(backend, name)
        settings = stored_settings(study)
        counts = state_counts(study)
        click.echo(f"{name}: {format_counts(counts, settings.n_trials if settings else None)}")
        values = [t.values[0] for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and t.values]
        if len(study.directions) > 1:
            front = sorted(t.number for t in study.best_trials)
            if front:
                click.echo(f"  Pareto front: {len(front)} trial(s) ({', '.join(map(str, front))})")
        elif values and settings:
            best = max(values) if settings.direction == "maximize" else min(values)
            click.echo(f"  best {settings.metric} {best:.4f}")
        for t in study.get_trials(deepcopy=False):
            if t.state.name == "RUNNING":
                owner = t.user_attrs.get("worker") or {}
                where = f"{owner.get('label', '?')} (pid {owner.get('pid', '?')} on {owner.get('host', '?')})"
                done = len(t.intermediate_values) or t.user_attrs.get("epochs") or 0
                click.echo(f"  trial {t.number} running on {where}, {done} epoch(s) reported")
    _echo_tools(spec, artifact_target(artifacts, spec))


@optuna_group.command("best")
@storage_option
@study_option
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True, help="Rows in the table.")
@click.option(
    "--export",
    "export_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the best trial's full config here (several objectives: the --trial chosen from the Pareto "
    "front); `flexcnn train FILE` reproduces it.",
)
@click.option("--trial", "trial_number", type=click.IntRange(min=0), help="Export this trial instead of the best.")
def best_command(
    storage: str | None, study_name: str | None, top: int, export_path: Path | None, trial_number: int | None
) -> None:
    """The top trials as a table (the Pareto front for several objectives); --export writes one as a config file."""
    from flexcnn.errors import UserError
    from flexcnn.search.export import pick_trial, write_export
    from flexcnn.search.storage import open_storage, parse_storage
    from flexcnn.search.study import load_study

    backend = open_storage(parse_storage(storage), create=False)
    if study_name is None:
        import optuna

        names = optuna.get_all_study_names(backend)
        if len(names) != 1:
            raise UserError(f"give --study NAME (studies in this storage: {', '.join(names) or 'none'})")
        study_name = names[0]
    study = load_study(backend, study_name)
    _print_summary(study, top)
    if export_path is not None:
        trial = pick_trial(study, trial_number)
        write_export(export_path, study, trial)
        click.echo(f"wrote trial {trial.number}'s config to {export_path}; reproduce with: flexcnn train {export_path}")


@optuna_group.command("url")
@storage_option
@artifacts_option
def url_command(storage: str | None, artifacts: str | None) -> None:
    """The storage as Optuna's own tools take it (optuna-dashboard, `optuna --storage`), and their command lines.

    Our journal:PATH and relative paths are not understood there; the first line is what to paste:
    optuna-dashboard "$(flexcnn optuna url --storage journal:runs/x.log | head -1)".
    """
    from flexcnn.search.artifacts import artifact_target
    from flexcnn.search.optuna_tools import tool_forms
    from flexcnn.search.storage import parse_storage

    spec = parse_storage(storage)
    forms = tool_forms(spec, artifact_target(artifacts, spec))
    click.echo(forms.url)
    for line in forms.lines():
        click.echo(line)


def _echo_tools(spec: StorageSpec, artifacts: ArtifactTarget) -> None:
    """How to look at the study with optuna-dashboard and Optuna's CLI (forms they accept)."""
    from flexcnn.search.optuna_tools import tool_forms

    for line in tool_forms(spec, artifacts).lines():
        click.echo(line)


def _print_summary(study: optuna.Study, top: int) -> None:
    from flexcnn.search.study import format_counts, format_leaderboard, leaderboard, state_counts, stored_settings

    settings = stored_settings(study)
    counts = format_counts(state_counts(study), settings.n_trials if settings else None)
    click.echo(f"\nstudy {study.study_name!r}: {counts}")
    if len(study.directions) > 1:
        names = study.metric_names or [f"value {i}" for i in range(len(study.directions))]
        rows = leaderboard(study, top)
        shown = f", best {len(rows)} shown" if len(rows) < len(study.best_trials) else ""
        click.echo(f"Pareto front: {len(study.best_trials)} trial(s){shown}; none is beaten on every objective at once")
        click.echo(format_leaderboard(rows, names))
        return
    metric = settings.metric if settings else "value"
    click.echo(format_leaderboard(leaderboard(study, top), metric))


def _worker_options(kwargs: dict[str, object]) -> WorkerOptions:
    from flexcnn.search.workers import WorkerOptions

    return WorkerOptions(**kwargs)  # type: ignore[arg-type]
