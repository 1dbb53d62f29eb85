"""Hardware contracts: which precision and memory layout a run picks, and that each one trains."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from flexcnn.config import load_config
from flexcnn.evaluate import evaluate_checkpoint
from flexcnn.hardware import Hardware, native_bf16, resolve_hardware
from flexcnn.run import run
from flexcnn.sections import TrainConfig
from tests.conftest import TINY

CPU = torch.device("cpu")


def _train(*overrides: str) -> TrainConfig:
    return load_config(None, [f"train.{o}" for o in overrides]).train


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="reads the CPU flags from /proc/cpuinfo")
def test_cpu_bf16_is_native_exactly_when_the_cpu_has_avx512_bf16_or_amx() -> None:
    # An oracle independent of torch's probes: the kernel's view of the CPU's flags.
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    flags = set(" ".join(line for line in lines if line.startswith("flags")).split())
    assert native_bf16(CPU) is bool(flags & {"avx512_bf16", "amx_bf16"})
    assert native_bf16(torch.device("meta")) is False


@pytest.mark.parametrize(
    ("amp", "expected"),
    [("auto", None), ("none", None), ("bf16", torch.bfloat16), ("fp16", torch.float16)],
)
def test_amp_setting_resolves_on_cpu(amp: str, expected: object) -> None:
    # auto is fp32 on CPU even with native bf16: bf16 there is opt-in (see hardware.py).
    hw = resolve_hardware(_train("device=cpu", f"amp={amp}"))
    assert hw.device == CPU and hw.amp_dtype == expected
    assert not hw.needs_scaler  # a GradScaler is for fp16 on CUDA only


@pytest.mark.parametrize(("setting", "expected"), [("on", True), ("off", False), ("auto", False)])
def test_channels_last_on_cpu_is_explicit(setting: str, expected: bool) -> None:
    # auto is CUDA-only: oneDNN's bf16 NHWC backward sporadically gave NaN gradients (see hardware.py).
    assert resolve_hardware(_train("device=cpu", f"channels_last={setting}")).channels_last is expected


def test_describe_names_the_fast_paths() -> None:
    assert Hardware(CPU, None, False).describe() == "cpu"
    assert Hardware(CPU, torch.bfloat16, False).describe() == "cpu (bf16 autocast)"
    assert Hardware(torch.device("cuda"), torch.float16, True).describe() == "cuda (fp16 autocast, channels_last)"


@pytest.mark.parametrize(
    "layout",
    [
        ["train.amp=none", "train.channels_last=off"],
        ["train.amp=bf16", "train.channels_last=on"],
        ["train.amp=bf16", "train.channels_last=off"],
        ["train.amp=none", "train.channels_last=on"],
    ],
    ids=["fp32", "bf16+channels_last", "bf16", "fp32+channels_last"],
)
def test_every_precision_and_layout_trains_and_keeps_fp32_weights(tmp_path: Path, layout: list[str]) -> None:
    # bf16 is emulated where the CPU lacks it.
    config = load_config(None, [*TINY, "model.num_filters=[16,32]", *layout])
    result = run(config, run_dir=tmp_path)
    assert result.status == "completed" and result.summary["test/acc"] > 0.3
    state = torch.load(tmp_path / "best.pt", weights_only=True)["model"]
    assert all(t.dtype == torch.float32 for t in state.values() if t.is_floating_point())  # autocast, not .half()
    # `flexcnn evaluate` runs the checkpoint the way the run did, so it reproduces the run's test metrics.
    again = evaluate_checkpoint(tmp_path / "best.pt", [])
    assert again["test/acc"] == result.summary["test/acc"]
    assert again["test/loss"] == pytest.approx(result.summary["test/loss"], rel=1e-5)
    describe = {"bf16": "bf16 autocast", "channels_last=on": "channels_last"}
    summary = (tmp_path / "summary.json").read_text()
    for key, words in describe.items():
        assert (words in summary) is any(key in o for o in layout), summary


@pytest.mark.parametrize(
    ("text", "channels_last", "compile_mode"),
    [("on", "on", "default"), ("off", "off", "off"), ("true", "on", "default"), ("auto", "auto", None)],
)
def test_yaml_on_off_reads_as_the_setting_not_a_bool(
    tmp_path: Path, text: str, channels_last: str, compile_mode: str | None
) -> None:
    # PyYAML reads a bare on/off/true as a bool; the hardware switches take them as the user meant.
    assert _train(f"channels_last={text}").channels_last == channels_last
    if compile_mode is not None:
        file = tmp_path / "c.yaml"
        file.write_text(f"train: {{compile: {text}}}\n")
        assert load_config(file, []).train.compile == compile_mode
