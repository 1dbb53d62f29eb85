"""Sweep agents: one child process per GPU, pinned to it, under :class:`flexcnn.processes.Supervisor`."""

from flexcnn.agents.children import agent_specs, wandb_agent_argv
from flexcnn.agents.gpus import NoGPUError, discover_gpus, parse_gpu_spec, select_gpus
from flexcnn.agents.narration import AgentLog

__all__ = [
    "AgentLog",
    "NoGPUError",
    "agent_specs",
    "discover_gpus",
    "parse_gpu_spec",
    "select_gpus",
    "wandb_agent_argv",
]
