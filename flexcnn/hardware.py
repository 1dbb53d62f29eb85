"""Device, precision and thread choices resolved from ``train`` config."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from flexcnn.config import TrainConfig
from flexcnn.errors import ConfigError


@dataclass(frozen=True)
class Hardware:
    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool

    @property
    def needs_scaler(self) -> bool:
        return self.amp_dtype == torch.float16 and self.device.type == "cuda"


def resolve_hardware(cfg: TrainConfig) -> Hardware:
    """Pick the device and the fast paths that pay off on it."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(cfg.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"train.device={cfg.device!r} but no CUDA GPU is visible; use train.device=cpu or auto")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"train.device={cfg.device!r}: only {torch.cuda.device_count()} GPU(s) visible")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ConfigError("train.device=mps but MPS is not available on this machine")
    cuda = device.type == "cuda"
    amp: torch.dtype | None = None
    if cfg.amp == "bf16" or (cfg.amp == "auto" and cuda and torch.cuda.is_bf16_supported()):
        amp = torch.bfloat16
    elif cfg.amp == "fp16":
        amp = torch.float16
    channels_last = cfg.channels_last == "on" or (cfg.channels_last == "auto" and cuda)
    if cuda:
        torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Hardware(device, amp, channels_last)
