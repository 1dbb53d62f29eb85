"""Config contracts: every mistake fails at load time, naming the field and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from flexcnn.config import load_config
from flexcnn.errors import ConfigError
from flexcnn.models.flexible_cnn import FlexibleCNNConfig
from flexcnn.overrides import parse_value
from tests.helpers import flexcnn_cli

# (overrides or YAML text, words the one-line message must contain)
MISTAKES: list[tuple[list[str] | str, list[str]]] = [
    (["model.activaton=relu"], ["model.activaton", "unknown field", "activation"]),
    (["model.activation=tanh"], ["model.activation", "relu", "gelu", "tanh"]),
    (["optim.lr=-1"], ["optim.lr", "greater than 0"]),
    (["optim.lr=fast"], ["optim.lr", "fast"]),
    (["train.epochs=0"], ["train.epochs", "greater than or equal to 1"]),
    (["model.conv_dropout=1.5"], ["model.conv_dropout", "less than 1"]),
    (["data.source=imagenet"], ["data.source", "digits", "mnist5k"]),
    (["data.source=imagefolder"], ["data.root is required"]),
    (["model.num_filters=[32,64]", "model.kernel_size=[3,5,7]"], ["kernel_size", "3 entries", "2 conv blocks"]),
    (["model.kind=resnet51"], ["model.kind", "resnet51", "resnet50", "vgg19"]),
    (["optim.scheduler=linear"], ["optim.scheduler", "cosine", "onecycle"]),
    (["train.device=tpu"], ["train.device", "cpu", "cuda"]),
    (["nonsense.key=1"], ["nonsense", "unknown field", "model, optim, train"]),
    (["optim.lr"], ["optim.lr", "section.field=value"]),
    (["data.batch_size=[1,2"], ["cannot parse", "[1,2"]),
    (["data.mean=[0.5]"], ["data.mean", "data.std"]),
    ("model: [1, 2]\n", ["model", "expected a mapping with a kind", "[1, 2]"]),
    ("- just\n- a list\n", ["must hold a mapping"]),
    ("model: {kind: flexible_cnn\n", ["not valid YAML"]),
    ("train:\n  epochs: 3\n  epohcs: 4\n", ["train.epohcs", "did you mean 'epochs'"]),
]


def _load(mistake: list[str] | str, tmp_path: Path) -> None:
    if isinstance(mistake, str):
        path = tmp_path / "bad.yaml"
        path.write_text(mistake)
        load_config(path)
    else:
        load_config(None, mistake)


@pytest.mark.parametrize(("mistake", "words"), MISTAKES, ids=[str(m)[:40] for m, _ in MISTAKES])
def test_config_mistakes_name_the_field(mistake: list[str] | str, words: list[str], tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        _load(mistake, tmp_path)
    message = str(err.value)
    for word in words:
        assert word in message, f"{word!r} missing from: {message}"


@pytest.mark.parametrize("mistake", [m for m, _ in MISTAKES[:12] if isinstance(m, list)])
def test_cli_config_mistake_exits_2_without_traceback(mistake: list[str]) -> None:
    args = ["config"] + [a for o in mistake for a in ("--set", o)]
    proc = flexcnn_cli(*args, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ")


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    proc = flexcnn_cli("train", str(tmp_path / "nope.yaml"), timeout=60)
    assert proc.returncode == 2
    assert "nope.yaml does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_overrides_parse_like_yaml_plus_exponent_floats() -> None:
    assert parse_value("3e-4") == pytest.approx(3e-4)
    assert parse_value("[32, 64, 128]") == [32, 64, 128]
    assert parse_value("true") is True
    assert parse_value("relu") == "relu"
    cfg = load_config(None, ["optim.lr=3e-4", "model.num_filters=[32,64,128]", "data.augment=strong"])
    assert cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.model.num_filters == [32, 64, 128]


def test_yaml_then_overrides_merge_without_dropping_siblings(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("optim: {name: sgd, lr: 0.1, momentum: 0.8}\ntrain: {epochs: 4}\n")
    cfg = load_config(path, ["optim.lr=0.05"])
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.momentum, cfg.train.epochs) == ("sgd", 0.05, 0.8, 4)


@pytest.mark.parametrize(
    ("org", "expected"),
    [
        ("same", [32, 32, 32, 32, 32]),
        ("double", [32, 64, 128, 256, 512]),
        ("half", [32, 16, 8, 4, 2]),
        ("scale", [32, 64, 128, 256, 512]),
    ],
)
def test_filter_organisations(org: str, expected: list[int]) -> None:
    assert FlexibleCNNConfig(filter_organization=org, base_filters=32, num_blocks=5).filters() == expected


def test_scale_reaches_max_filters_in_any_depth() -> None:
    widths = FlexibleCNNConfig(filter_organization="scale", base_filters=32, max_filters=512, num_blocks=3).filters()
    assert widths == [32, 128, 512]


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    from flexcnn.config import dump_config

    cfg = load_config(None, ["model.kernel_size=[3,5]", "model.num_filters=[8,16]"])
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg
