"""The W&B reporter: every run to a W&B dashboard, online or offline for ``wandb sync`` later.

One job per module:

- ``mode``: online, offline or disabled, from the request, the config and the
  environment (credentials, a TCP probe); imports no wandb.
- ``service``: starts W&B's service process while the run loads its data.
- ``reporter``: ``wandb_reporter_for`` and ``WandbReporter``, one W&B run per
  flexcnn run: config, per-epoch history, summary, model artifact.
- ``media``: the end-of-run tables and charts, from ``flexcnn.metrics``' numbers.

``import wandb`` happens only when a run is really logged. The API key is never
read into our code: login detection only asks whether one exists.
"""

from flexcnn.reporters.wandb.mode import ModeDecision, logged_in, resolve_mode, server_reachable
from flexcnn.reporters.wandb.reporter import WandbReporter, WandbRunSettings, wandb_reporter_for

__all__ = [
    "ModeDecision",
    "WandbReporter",
    "WandbRunSettings",
    "logged_in",
    "resolve_mode",
    "server_reachable",
    "wandb_reporter_for",
]
