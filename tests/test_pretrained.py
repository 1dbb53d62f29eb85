"""Contracts of the pretrained trainers: strategies, batch-norm freezing, two-phase switch, weights.

Models are built with random or locally saved weights at small image sizes, on
scikit-learn's digits (1 channel, fed as 3), so everything runs on CPU without
a network.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
from torch import nn

from flexcnn.cli import main
from flexcnn.config import load_config
from flexcnn.errors import CheckpointError, ConfigError
from flexcnn.evaluate import evaluate_checkpoint
from flexcnn.models import InputSpec, available_models, build_model, input_request
from flexcnn.models.finetune import PretrainedAdapter
from flexcnn.models.pretrained import PretrainedConfig
from flexcnn.models.weights import weights_file
from flexcnn.reporters.base import Reporter, StopRun
from flexcnn.run import run

REPO = Path(__file__).resolve().parents[1]
CLASSES = 10


def build(kind: str, strategy: str = "feature_extraction", size: int = 32, **fields: Any) -> PretrainedAdapter:
    cfg = PretrainedConfig(
        kind=kind, weights=fields.pop("weights", "none"), strategy=strategy, image_size=size, **fields
    )
    adapter = build_model(cfg, InputSpec(3, size, CLASSES))
    assert isinstance(adapter, PretrainedAdapter)
    return adapter


def trainable(adapter: PretrainedAdapter) -> set[str]:
    return {n for n, p in adapter.module.named_parameters() if p.requires_grad}


def names_with(adapter: PretrainedAdapter, *prefixes: str) -> set[str]:
    return {n for n, _ in adapter.module.named_parameters() if n.startswith(prefixes)}


def vgg_blocks(*blocks: int) -> tuple[str, ...]:
    # VGG19's conv layers: blocks of 2, 2, 4, 4, 4 convs, each conv followed by ReLU, each block by MaxPool.
    starts = {1: (0, 2), 2: (5, 7), 3: (10, 12, 14, 16), 4: (19, 21, 23, 25), 5: (28, 30, 32, 34)}
    return tuple(f"features.{i}." for b in blocks for i in starts[b])


def save_backbone(name: str, path: Path, seed: int = 1234) -> dict[str, torch.Tensor]:
    """A state dict saved from a freshly built torchvision model (what an air-gapped user would copy over)."""
    torch.manual_seed(seed)
    state = torchvision.models.get_model(name).state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def run_config(tmp_path: Path, *overrides: str) -> Any:
    return load_config(
        None,
        [
            "data.source=digits",
            "data.limit=64",
            "data.batch_size=32",
            "data.augment=none",
            "data.val_fraction=0.03",
            "data.test_fraction=0.03",
            "model.image_size=16",  # ResNets pool a 16 px image down to 1x1: the cheapest size that runs
            "optim.lr=0.01",
            "logging.progress=false",
            "logging.wandb.num_samples=0",
            f"logging.output_dir={tmp_path}",
            *overrides,
        ],
    )


# --------------------------------------------------------------------------- registry and input


def test_registry_lists_pretrained_kinds() -> None:
    models = available_models()
    assert {"resnet50", "vgg19", "torchvision:<name>"} <= set(models)


def test_input_request_is_three_channels_at_model_size_with_imagenet_stats() -> None:
    request = input_request(PretrainedConfig(kind="torchvision:resnet18", weights="none", image_size=96))
    assert (request.channels, request.image_size) == (3, 96)
    assert request.mean == pytest.approx((0.485, 0.456, 0.406))
    assert request.std == pytest.approx((0.229, 0.224, 0.225))


def test_unknown_torchvision_model_is_a_config_error_with_suggestion() -> None:
    with pytest.raises(ConfigError, match="did you mean torchvision:resnet50"):
        input_request(PretrainedConfig(kind="torchvision:resnet5O", weights="none"))


def test_fixed_size_model_rejects_other_sizes_at_load_time() -> None:
    with pytest.raises(ConfigError, match="vit_b_16 takes 224x224 images only"):
        input_request(PretrainedConfig(kind="torchvision:vit_b_16", weights="none", image_size=32))


def test_too_small_images_fail_when_built_not_at_epoch_zero() -> None:
    with pytest.raises(ConfigError, match=r"model.image_size=16 is too small for vgg19"):
        build("vgg19", size=16)


def test_single_channel_input_is_refused_with_the_fix() -> None:
    cfg = PretrainedConfig(kind="torchvision:resnet18", weights="none", image_size=32)
    with pytest.raises(ConfigError, match=r"leave data.channels unset"):
        build_model(cfg, InputSpec(1, 32, CLASSES))


# --------------------------------------------------------------------------- strategies: which parameters train


RESNET50_EXPECTED = {
    ("feature_extraction", 1): ("fc.",),
    ("partial", 1): ("layer4.", "fc."),
    ("partial", 2): ("layer3.", "layer4.", "fc."),
    ("partial", 0): ("fc.",),
}
VGG19_EXPECTED = {
    ("feature_extraction", 1): ("classifier.6.",),
    # unfreezing conv block 5 also unfreezes fc6/fc7, which sit above it
    ("partial", 1): (*vgg_blocks(5), "classifier."),
    ("partial", 2): (*vgg_blocks(4, 5), "classifier."),
}


@pytest.mark.parametrize(("strategy", "k"), list(RESNET50_EXPECTED))
def test_resnet50_strategy_trains_exactly_the_intended_parameters(strategy: str, k: int) -> None:
    adapter = build("resnet50", strategy, unfreeze_stages=k)
    assert trainable(adapter) == names_with(adapter, *RESNET50_EXPECTED[(strategy, k)])
    assert [s.name for s in adapter.stages][-4:] == ["layer1", "layer2", "layer3", "layer4"]


@pytest.mark.parametrize(("strategy", "k"), list(VGG19_EXPECTED))
def test_vgg19_strategy_trains_exactly_the_intended_parameters(strategy: str, k: int) -> None:
    adapter = build("vgg19", strategy, unfreeze_stages=k)
    assert trainable(adapter) == names_with(adapter, *VGG19_EXPECTED[(strategy, k)])
    assert len(adapter.stages) == 5  # the five conv blocks


@pytest.mark.parametrize("kind", ["resnet50", "vgg19"])
def test_full_strategy_trains_everything(kind: str) -> None:
    adapter = build(kind, "full")
    assert trainable(adapter) == {n for n, _ in adapter.module.named_parameters()}
    counts = adapter.parameter_counts()
    assert counts["params/trainable"] == counts["params/total"]


GENERIC = [
    "torchvision:resnet18",
    "torchvision:densenet121",
    "torchvision:efficientnet_b0",
    "torchvision:mobilenet_v3_large",
    "torchvision:convnext_tiny",
    "torchvision:googlenet",
    "torchvision:squeezenet1_1",
]


@pytest.mark.parametrize("kind", GENERIC)
def test_any_torchvision_classifier_gets_a_head_and_stage_wise_unfreezing(kind: str) -> None:
    adapter = build(kind, "feature_extraction", size=64)
    head = {id(p) for p in adapter.head.parameters()}
    assert {id(p) for p in adapter.module.parameters() if p.requires_grad} == head
    with torch.no_grad():
        assert adapter.module.eval()(torch.randn(2, 3, 64, 64)).shape == (2, CLASSES)

    partial = build(kind, "partial", size=64, unfreeze_stages=2)
    last_two = {id(p) for s in partial.stages[-2:] for m in s.modules for p in m.parameters()}
    earlier = {id(p) for s in partial.stages[:-2] for m in s.modules for p in m.parameters()}
    grads = {id(p) for p in partial.module.parameters() if p.requires_grad}
    assert last_two <= grads
    assert {id(p) for p in partial.head.parameters()} <= grads
    assert not earlier & grads
    assert partial.parameter_counts()["params/trainable"] > adapter.parameter_counts()["params/trainable"]


def test_head_with_hidden_layer_and_dropout() -> None:
    adapter = build("torchvision:resnet18", head_hidden=64, head_dropout=0.5)
    layers = list(adapter.head)
    assert [type(m) for m in layers] == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert layers[2].p == 0.5
    counts = adapter.parameter_counts()
    assert counts["params/head"] == counts["params/trainable"] == 512 * 64 + 64 + 64 * CLASSES + CLASSES


def test_param_groups_put_the_backbone_at_the_lr_multiplier() -> None:
    adapter = build("torchvision:resnet18", "partial", unfreeze_stages=1, backbone_lr_mult=0.1)
    backbone, head = adapter.param_groups(0.01)
    assert backbone["lr"] == pytest.approx(0.001)
    assert head["lr"] == pytest.approx(0.01)
    layer4 = {id(p) for p in adapter.module.layer4.parameters()}
    assert {id(p) for p in backbone["params"]} == layer4
    assert {id(p) for p in head["params"]} == {id(p) for p in adapter.head.parameters()}


# --------------------------------------------------------------------------- batch-norm statistics


def _train_steps(adapter: PretrainedAdapter, steps: int = 2) -> None:
    opt = torch.optim.SGD([g for g in adapter.param_groups(0.1) if g["params"]], lr=0.1)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        adapter.train_mode()
        x = torch.randn(8, 3, 32, 32, generator=gen)
        y = torch.randint(0, CLASSES, (8,), generator=gen)
        loss = nn.functional.cross_entropy(adapter.module(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def _bn_state(adapter: PretrainedAdapter, prefix: str = "") -> dict[str, torch.Tensor]:
    return {
        f"{name}.{key}": value.clone()
        for name, m in adapter.module.named_modules()
        if isinstance(m, nn.BatchNorm2d) and name.startswith(prefix)
        for key, value in m.state_dict().items()
    }


def test_feature_extraction_freezes_batch_norm_statistics() -> None:
    adapter = build("torchvision:resnet18", "feature_extraction")
    before = {k: v.clone() for k, v in adapter.module.state_dict().items()}
    bn_before = _bn_state(adapter)
    _train_steps(adapter)
    after = adapter.module.state_dict()
    assert all(torch.equal(v, _bn_state(adapter)[k]) for k, v in bn_before.items())
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("fc."))
    assert not torch.equal(before["fc.0.weight"], after["fc.0.weight"])
    adapter.train_mode()
    assert all(not m.training for m in adapter.module.modules() if isinstance(m, nn.BatchNorm2d))
    assert adapter.head.training


def test_partial_moves_batch_norm_only_in_unfrozen_stages() -> None:
    adapter = build("torchvision:resnet18", "partial", unfreeze_stages=1)
    frozen, unfrozen = _bn_state(adapter, "layer3"), _bn_state(adapter, "layer4")
    _train_steps(adapter)
    assert all(torch.equal(v, _bn_state(adapter, "layer3")[k]) for k, v in frozen.items())
    moved = _bn_state(adapter, "layer4")
    assert any(not torch.equal(v, moved[k]) for k, v in unfrozen.items() if k.endswith("running_mean"))


def test_full_moves_batch_norm_everywhere() -> None:
    # The check above would notice movement: under full fine-tuning the stem's statistics do move.
    adapter = build("torchvision:resnet18", "full")
    stem = _bn_state(adapter, "bn1")
    _train_steps(adapter)
    assert not torch.equal(stem["bn1.running_mean"], _bn_state(adapter, "bn1")["bn1.running_mean"])


# --------------------------------------------------------------------------- two-phase


def test_two_phase_switches_at_head_epochs_and_new_groups_cover_unfrozen_parameters() -> None:
    adapter = build("resnet50", "two_phase", unfreeze_stages=2, head_epochs=2, backbone_lr_mult=0.01)
    assert adapter.phase_switch_epoch == 2
    assert trainable(adapter) == names_with(adapter, "fc.")
    assert adapter.on_epoch_start(0) is False
    assert adapter.on_epoch_start(1) is False
    assert trainable(adapter) == names_with(adapter, "fc.")
    assert adapter.on_epoch_start(2) is True
    assert trainable(adapter) == names_with(adapter, "layer3.", "layer4.", "fc.")
    assert adapter.on_epoch_start(3) is False

    backbone, head = adapter.param_groups(1e-3)
    expected = {id(p) for p in [*adapter.module.layer3.parameters(), *adapter.module.layer4.parameters()]}
    assert {id(p) for p in backbone["params"]} == expected
    assert backbone["lr"] == pytest.approx(1e-5)
    assert head["lr"] == pytest.approx(1e-3)
    counts = adapter.parameter_counts()
    assert counts["params/trainable"] == counts["params/trainable_phase2"]


class Snapshots(Reporter):
    """Reads the model and optimiser from last.pt after every epoch (what the run folder holds)."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.models: list[dict[str, torch.Tensor]] = []
        self.optimizers: list[dict[str, Any]] = []
        self.stop_after = stop_after
        self.run_dir: Path | None = None

    def on_start(self, info: Any) -> None:
        self.run_dir = info.run_dir

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        assert self.run_dir is not None
        state = torch.load(self.run_dir / "last.pt", weights_only=True)
        self.models.append(state["model"])
        self.optimizers.append(state["optimizer"])
        if self.stop_after is not None and epoch + 1 == self.stop_after:
            raise StopRun("pruned", "test stops here")


def _is_param(key: str) -> bool:
    return key.endswith(("weight", "bias"))  # the rest are batch-norm buffers


def _changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], prefix: str) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a if k.startswith(prefix) and k.endswith("weight"))


def test_two_phase_run_trains_head_then_unfreezes_with_a_new_optimizer(tmp_path: Path) -> None:
    initial = save_backbone("resnet18", tmp_path / "resnet18.pth")
    initial = {k: v for k, v in initial.items() if not k.startswith("fc.")}
    config = run_config(
        tmp_path / "runs",
        "model.kind=torchvision:resnet18",
        f"model.weights={tmp_path / 'resnet18.pth'}",
        "model.strategy=two_phase",
        "model.head_epochs=1",
        "model.unfreeze_stages=1",
        "model.backbone_lr_mult=0.1",
        "train.epochs=3",
        "optim.scheduler=none",
    )
    snaps = Snapshots(stop_after=2)
    first = run(config, [snaps], run_dir=tmp_path / "run")
    assert first.status == "pruned"

    epoch1, epoch2 = snaps.models
    assert not _changed(initial, epoch1, "layer4.")  # head phase: backbone untouched
    assert _changed(initial, epoch2, "layer4.")  # phase 2: layer4 trains
    assert not _changed(initial, epoch2, "layer3.")
    assert len(snaps.optimizers[0]["param_groups"]) == 1  # head only (the empty backbone group is dropped)
    groups = snaps.optimizers[1]["param_groups"]
    assert [g["name"] for g in groups] == ["backbone", "head"]
    assert len(groups[0]["params"]) == sum(1 for k in initial if k.startswith("layer4.") and _is_param(k))
    assert groups[0]["lr"] == pytest.approx(groups[1]["lr"] * 0.1)

    # Resuming after the switch keeps phase 2 (same groups) and finishes the run.
    resumed_snaps = Snapshots()
    resumed = run(config, [resumed_snaps], run_dir=tmp_path / "run", resume=True)
    assert resumed.status == "completed"
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3]
    assert [g["name"] for g in resumed_snaps.optimizers[0]["param_groups"]] == ["backbone", "head"]
    assert _changed(epoch2, resumed_snaps.models[0], "layer4.")
    assert not _changed(initial, resumed_snaps.models[0], "layer3.")


def test_two_phase_that_never_switches_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = run_config(
        tmp_path / "runs",
        "model.kind=torchvision:resnet18",
        "model.weights=none",
        "model.strategy=two_phase",
        "model.head_epochs=2",
        "model.unfreeze_stages=1",
        "train.epochs=2",
    )
    with caplog.at_level("WARNING", logger="flexcnn.run"):
        result = run(config, run_dir=tmp_path / "run")
    assert result.status == "completed"
    assert "model.head_epochs=2 is not below train.epochs=2" in caplog.text
    assert "feature extraction" in caplog.text


# --------------------------------------------------------------------------- weights


@pytest.mark.parametrize(
    ("kind", "arch", "strategy", "trained"),
    [
        ("resnet50", "resnet50", "feature_extraction", ()),
        ("torchvision:resnet18", "resnet18", "partial", ("layer4.",)),
    ],
)
def test_two_epochs_from_a_local_state_dict_change_only_trainable_parameters(
    tmp_path: Path, kind: str, arch: str, strategy: str, trained: tuple[str, ...]
) -> None:
    saved = save_backbone(arch, tmp_path / f"{arch}.pth")
    config = run_config(
        tmp_path / "runs",
        f"model.kind={kind}",
        f"model.weights={tmp_path / f'{arch}.pth'}",
        f"model.strategy={strategy}",
        "model.unfreeze_stages=1",
        "train.epochs=2",
    )
    result = run(config, run_dir=tmp_path / "run")
    assert result.status == "completed"
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    model = state["model"]
    backbone = [k for k in saved if not k.startswith("fc.")]
    # Everything outside the trained stages, batch-norm statistics included, is exactly the file's.
    assert all(torch.equal(model[k], saved[k]) for k in backbone if not k.startswith(trained))
    if trained:
        assert _changed(saved, model, trained[0])
    head_params = sum(v.numel() for k, v in model.items() if k.startswith("fc."))
    stage_params = sum(v.numel() for k, v in saved.items() if trained and k.startswith(trained) and _is_param(k))
    assert result.summary["params/trainable"] == head_params + stage_params
    # grayscale digits were fed as 3 channels at the model's size
    assert state["input"]["channels"] == 3 and state["input"]["source_channels"] == 1
    assert state["input"]["image_size"] == 16

    if trained:
        # evaluate rebuilds the model with weights: none and reproduces the test accuracy
        metrics = evaluate_checkpoint(tmp_path / "run" / "best.pt", [])
        assert metrics["test/acc"] == pytest.approx(result.summary["test/acc"])
        # and a run's best.pt serves as backbone weights for the next one (its head is not reused)
        best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)["model"]
        again = build(kind, weights=str(tmp_path / "run" / "best.pt"), head_hidden=8).module.state_dict()
        assert all(torch.equal(again[k], best[k]) for k in backbone)


def test_local_state_dict_from_another_architecture_is_a_clear_error(tmp_path: Path) -> None:
    save_backbone("resnet18", tmp_path / "resnet18.pth")
    with pytest.raises(CheckpointError, match=r"does not fit resnet50: \d+ missing keys .*other shapes"):
        build("resnet50", weights=str(tmp_path / "resnet18.pth"))


def test_missing_or_unsafe_local_weights_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such file; expected 'imagenet', 'none' or the path"):
        build("torchvision:resnet18", weights=str(tmp_path / "nope.pth"))
    torch.save(nn.Linear(2, 2), tmp_path / "module.pth")  # a pickled module, not a state dict
    with pytest.raises(CheckpointError, match=r"refusing .*weights_only=True"):
        build("torchvision:resnet18", weights=str(tmp_path / "module.pth"))


def test_imagenet_weights_load_from_the_torch_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    path = weights_file("resnet18")
    assert path.parent == tmp_path / "torch" / "hub" / "checkpoints"
    saved = save_backbone("resnet18", path)
    adapter = build("torchvision:resnet18", weights="imagenet")
    loaded = adapter.module.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in saved.items() if not k.startswith("fc."))


def test_imagenet_weights_offline_with_empty_cache_exit_2_naming_file_and_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # No network, also on machines that have one: urllib's requests go through a proxy on a closed local port.
    dead = "http://127.0.0.1:9"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": dead, "https": dead}))
    monkeypatch.setattr(urllib.request, "_opener", opener)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    args = ["train", "--set", "model.kind=resnet50", "--set", "model.image_size=32", "--set", "train.epochs=1"]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--set", f"logging.output_dir={tmp_path / 'runs'}"])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    assert message.startswith("error: model.weights=imagenet: resnet50's ImageNet weights")
    assert "resnet50-11ad3fa6.pth" in message
    assert f"cache folder {folder}" in message
    assert "--set model.weights=/path/to/resnet50-11ad3fa6.pth" in message
    assert not any(folder.iterdir())  # no partial download left behind
    assert not (tmp_path / "runs").exists()  # failed before any data was read or folder written


# --------------------------------------------------------------------------- shipped configs


@pytest.mark.parametrize(
    "path", sorted(str(p) for p in (REPO / "configs").glob("*.yaml") if p.name.startswith(("resnet50-", "vgg19-")))
)
def test_shipped_configs_validate_and_build(path: str) -> None:
    config = load_config(path, ["model.weights=none", "model.image_size=32"])
    assert isinstance(config.model, PretrainedConfig)
    adapter = build_model(config.model, InputSpec(3, 32, CLASSES))
    assert adapter.parameter_counts()["params/trainable"] > 0


def test_shipped_configs_exist() -> None:
    names = {p.name for p in (REPO / "configs").glob("*.yaml")}
    assert {"resnet50-finetune.yaml", "resnet50-two-phase.yaml", "vgg19-finetune.yaml"} <= names


def test_strategy_knobs_are_sweepable_overrides() -> None:
    config = load_config(
        None,
        [
            "model.kind=vgg19",
            "model.strategy=two_phase",
            "model.unfreeze_stages=3",
            "model.head_epochs=2",
            "model.backbone_lr_mult=1e-2",
            "model.head_hidden=256",
            "model.head_dropout=0.5",
            "model.image_size=128",
        ],
    )
    assert isinstance(config.model, PretrainedConfig)
    assert (config.model.strategy, config.model.unfreeze_stages, config.model.backbone_lr_mult) == (
        "two_phase",
        3,
        0.01,
    )
    with pytest.raises(ConfigError, match=r"model.strategy"):
        load_config(None, ["model.kind=vgg19", "model.strategy=freeze_all"])
