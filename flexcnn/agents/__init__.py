"""Sweep agents: one child process per GPU, with signal forwarding and restart limits."""

from flexcnn.agents.children import agent_specs, optuna_worker_argv, wandb_agent_argv
from flexcnn.agents.gpus import NoGPUError, discover_gpus, parse_gpu_spec, select_gpus
from flexcnn.agents.supervisor import ChildSpec, RestartPolicy, SlotReport, Supervisor, SupervisorReport

__all__ = [
    "ChildSpec",
    "NoGPUError",
    "RestartPolicy",
    "SlotReport",
    "Supervisor",
    "SupervisorReport",
    "agent_specs",
    "discover_gpus",
    "optuna_worker_argv",
    "parse_gpu_spec",
    "select_gpus",
    "wandb_agent_argv",
]
