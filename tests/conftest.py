"""Shared test setup: quiet, reproducible, and never touching the user's caches."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Two cores on CI: keep torch from oversubscribing when tests start subprocesses too.
torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path_factory.getbasetemp() / "flexcnn-cache"
    monkeypatch.setenv("FLEXCNN_CACHE", str(cache))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", os.environ.get("WANDB_MODE", "offline"))


TINY = [
    "data.source=digits",
    "model.num_filters=[8,16]",
    "model.dense_units=[32]",
    "data.hflip=false",
    "train.epochs=2",
    "optim.lr=1e-2",  # two short epochs must get well above chance
    "logging.progress=false",
]
