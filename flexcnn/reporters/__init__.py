"""Reporters: console, run-folder files, W&B and Optuna sinks behind one protocol."""

from flexcnn.reporters.base import BaseReporter, Reporter, RunInfo, RunResult, StopRun
from flexcnn.reporters.console import ConsoleReporter
from flexcnn.reporters.files import FilesReporter

__all__ = ["BaseReporter", "ConsoleReporter", "FilesReporter", "Reporter", "RunInfo", "RunResult", "StopRun"]
