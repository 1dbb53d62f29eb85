"""Training losses: cross-entropy (label smoothing, class weights) and softmax focal loss."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from flexcnn.sections import TrainConfig


class FocalLoss(nn.Module):
    """Softmax focal loss (Lin et al. 2017): down-weights easy examples by (1 - p_t)^gamma."""

    def __init__(self, gamma: float, weight: Tensor | None = None, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.gamma, self.label_smoothing = gamma, label_smoothing
        self.register_buffer("weight", weight)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        ce = F.cross_entropy(logits, target, weight=self.weight, reduction="none", label_smoothing=self.label_smoothing)
        p_t = logits.softmax(dim=1).gather(1, target[:, None]).squeeze(1)
        return ((1 - p_t).pow(self.gamma) * ce).mean()


def make_loss(cfg: TrainConfig, class_weights: Tensor | None) -> nn.Module:
    if cfg.loss == "focal":
        return FocalLoss(cfg.focal_gamma, class_weights, cfg.label_smoothing)
    return nn.CrossEntropyLoss(weight=class_weights, label_smoothing=cfg.label_smoothing)
