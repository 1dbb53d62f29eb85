"""``flexcnn agent``: one sweep agent per GPU (W&B agents, Optuna workers, or any command)."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from flexcnn.errors import UserError
from flexcnn.search.worker_argv import STORAGE_ENV

if TYPE_CHECKING:
    from flexcnn.processes import SupervisorReport


def _agent_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options every agent subcommand shares: which GPUs, CPU mode, restarts, stopping, dry run."""
    options = [
        click.option(
            "--gpus",
            default="all",
            show_default=True,
            metavar="all|0,1,3",
            help="GPUs to run one agent on each ('all' = every visible GPU).",
        ),
        click.option(
            "--cpu",
            is_flag=True,
            help="Do not require a visible GPU (testing): children still get CUDA_VISIBLE_DEVICES and train on CPU.",
        ),
        click.option(
            "--max-restarts",
            type=click.IntRange(min=0),
            default=3,
            show_default=True,
            help="Restart a crashed agent at most this many times, then give up on its GPU.",
        ),
        click.option(
            "--restart-delay",
            type=click.FloatRange(min=0),
            default=5.0,
            show_default=True,
            help="Seconds before the first restart; doubles for each further one.",
        ),
        click.option(
            "--grace",
            type=click.FloatRange(min=0),
            default=None,
            help="After a stop signal, interrupt trials still running after this many seconds "
            "(default: wait for them). Keep it below the container's stop timeout.",
        ),
        click.option(
            "--trials-per-gpu",
            type=click.IntRange(min=1, max=64),
            default=1,
            show_default=True,
            envvar="FLEXCNN_TRIALS_PER_GPU",
            help="Agents sharing each GPU: a 28x28 CNN cannot fill a large GPU, so run several trials on it at once.",
        ),
        click.option("--dry-run", is_flag=True, help="Print the command each agent would run and exit."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.group(name="agent")
def agent_group() -> None:
    """Run one sweep agent per GPU, each child pinned with CUDA_VISIBLE_DEVICES.

    SIGTERM or Ctrl-C lets every agent finish (or record) its current trial; a
    second one interrupts the trials (they checkpoint and are marked); a third
    kills the agents. A crashed agent is restarted up to --max-restarts times.
    """


@agent_group.command("optuna")
@click.argument("sweep", required=False, envvar="FLEXCNN_SWEEP", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--study", envvar="FLEXCNN_STUDY", help="Study name (env FLEXCNN_STUDY; default: the sweep's name).")
@click.option(
    "--storage",
    envvar=STORAGE_ENV,
    help="Optuna storage URL (env FLEXCNN_STORAGE): postgresql://..., sqlite:///..., or a journal file.",
)
@click.option(
    "--n-trials",
    type=click.IntRange(min=1),
    envvar="FLEXCNN_N_TRIALS",
    help="Stop once the study has this many finished trials (env FLEXCNN_N_TRIALS).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="CPU threads per worker (default: this machine's CPUs shared out between the workers).",
)
@_agent_options
def optuna_agents(
    sweep: Path | None,
    study: str | None,
    storage: str | None,
    n_trials: int | None,
    threads: int | None,
    **common: Any,
) -> None:
    """Run one `flexcnn optuna worker SWEEP` per GPU against one study.

    SWEEP is a sweep YAML (env FLEXCNN_SWEEP). Workers on any number of hosts
    share a study through the same --storage (PostgreSQL across hosts).
    """
    from flexcnn.hardware import threads_per_worker
    from flexcnn.search.worker_argv import optuna_worker_argv, storage_env

    if sweep is None:
        raise UserError("flexcnn agent optuna: name the sweep YAML (argument SWEEP or env FLEXCNN_SWEEP)")
    if not sweep.is_file():
        raise UserError(f"sweep file {sweep} does not exist (resolved from {Path.cwd()})")

    def argv(gpus: Sequence[str]) -> list[str]:
        # Each worker would otherwise size its thread pool for the whole machine.
        per_worker = threads or threads_per_worker(len(gpus))
        return optuna_worker_argv(sweep, study=study, n_trials=n_trials, threads=per_worker)

    _run(argv, env={**os.environ, **storage_env(storage)}, **common)


@agent_group.command("wandb")
@click.argument("sweep_id", required=False, envvar="WANDB_SWEEP_ID")
@click.option(
    "--count",
    type=click.IntRange(min=1),
    envvar="FLEXCNN_AGENT_COUNT",
    help="Runs per agent before it exits (wandb agent --count; env FLEXCNN_AGENT_COUNT).",
)
@_agent_options
def wandb_agents(sweep_id: str | None, count: int | None, **common: Any) -> None:
    """Run one `wandb agent SWEEP_ID` per GPU.

    SWEEP_ID is `entity/project/id` or the id printed by `wandb sweep` (env
    WANDB_SWEEP_ID). The API key comes from WANDB_API_KEY, or from the file
    named by WANDB_API_KEY_FILE (a Docker or Kubernetes secret).
    """
    from flexcnn.agents import wandb_agent_argv

    if not sweep_id:
        raise UserError("flexcnn agent wandb: name the sweep (argument SWEEP_ID or env WANDB_SWEEP_ID)")
    _run(lambda _gpus: wandb_agent_argv(sweep_id, count=count), **common)


@agent_group.command(
    "run",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@_agent_options
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run_agents(command: tuple[str, ...], **common: Any) -> None:
    """Run any COMMAND once per GPU.

    For example `flexcnn agent run --gpus all -- flexcnn train cfg.yaml`. Each
    child gets CUDA_VISIBLE_DEVICES and FLEXCNN_AGENT_SLOT (0, 1, ...).
    """
    _run(lambda _gpus: list(command), **common)


def _run(
    build_argv: Callable[[Sequence[str]], Sequence[str]],
    *,
    gpus: str,
    cpu: bool,
    max_restarts: int,
    restart_delay: float,
    grace: float | None,
    trials_per_gpu: int,
    dry_run: bool,
    env: Mapping[str, str] | None = None,
) -> None:
    from flexcnn.agents import AgentLog, agent_specs, select_gpus
    from flexcnn.agents.redact import redact, redact_argv
    from flexcnn.processes import RestartPolicy, Supervisor

    # Each GPU id appears once per agent slot; argv builders size thread pools by slot count.
    ids = [gpu for gpu in select_gpus(gpus, cpu=cpu) for _ in range(trials_per_gpu)]
    specs = agent_specs(build_argv(ids), ids, env)  # env: this process's when None
    program = specs[0].argv[0]
    if shutil.which(program, path=specs[0].env.get("PATH")) is None:
        # Caught here, not as a crash loop of "could not start" with growing restart delays.
        raise UserError(f"{program}: command not found (or not executable) on the agents' PATH")
    if dry_run:
        for spec in specs:
            shown = {key: spec.env[key] for key in ("CUDA_VISIBLE_DEVICES", STORAGE_ENV) if key in spec.env}
            env = " ".join(f"{key}={shlex.quote(redact(value))}" for key, value in shown.items())
            click.echo(f"{spec.name}: {env} {shlex.join(redact_argv(spec.argv))}")
        return
    policy = RestartPolicy(max_restarts=max_restarts, delay=restart_delay)
    report = Supervisor(specs, policy=policy, grace=grace, hooks=AgentLog()).run()
    for slot in report.failed:
        click.echo(
            f"error: {slot.name} failed {slot.starts} time(s) (exit codes {', '.join(map(str, slot.exit_codes))})",
            err=True,
        )
    # sys.exit, not ctx.exit: main() runs click with standalone_mode=False, which swallows ctx.exit's code.
    sys.exit(_exit_code(report))


def _exit_code(report: SupervisorReport) -> int:
    """The supervisor's code (1 failed, 130 killed), or EXIT_STOPPED when a stop signal came before the work was done.

    An agent that ends 0 after the signal finished its work (an Optuna worker whose study is
    complete); any other ending means there is work left, and a scheduler should start us again.
    """
    from flexcnn.exit_codes import EXIT_STOPPED

    if report.exit_code or not report.stop_level:
        return report.exit_code
    if all(slot.exit_codes[-1:] == [0] for slot in report.slots):
        return 0
    click.echo(f"stopped before the agents' work was done: exit code {EXIT_STOPPED} (start again to go on)", err=True)
    return EXIT_STOPPED
