"""Bad-input catalogue: every user mistake exits 2 with one message, no traceback, and no result.

Each case is one line of data: the files to build (a key of ``BUILDERS``), the
command line, and the words the message must contain (the culprit and what
was expected). The commands run through ``flexcnn.cli.main``, the console
script's entry point, in this process (one torch import for ~60 cases); a few
run as real subprocesses at the end to show the entry point behaves the same
there. ``tests/test_config.py`` and ``tests/test_data.py`` cover the same
mistakes below the CLI; this file is about what the user sees.
"""

from __future__ import annotations

import os
import shlex
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flexcnn.cli import main
from flexcnn.data.fer_csv import write_fer_csv
from flexcnn.data.folders import write_image_folder
from tests.conftest import TINY
from tests.helpers import flexcnn_cli

# Files that could pass for a result of a run that never happened.
RESULT_FILES = {"summary.json", "best.pt", "last.pt", "metrics.jsonl", "per_class.json", "confusion.png", "roc.json"}
# Appended to every `train` case: tiny, quiet, and writing under the case's own folder.
TRAIN = "--set logging.output_dir={runs} --set logging.progress=false --set train.epochs=1 " + " ".join(
    f"--set {o}" for o in TINY if not o.startswith(("train.epochs", "logging.progress", "data.source"))
)
FOLDER = "--set data.source=imagefolder --set data.root={tmp}/data --set data.image_size=8"
FER = "--set data.source=fer2013_csv --set data.root={tmp}/fer.csv"
SWEEP_HEAD = (
    "command: [flexcnn, train, configs/demo-digits.yaml]\nmethod: random\nmetric: {name: val/acc, goal: maximize}\n"
)
OPTUNA = "--storage {tmp}/study.log --output-dir {runs} --n-trials 1"

Builder = Callable[[Path, Path], None]


def _text(name: str, text: str) -> Builder:
    return lambda tmp, good: (tmp / name).write_text(text)


def _bytes(name: str, data: bytes) -> Builder:
    return lambda tmp, good: (tmp / name).write_bytes(data)


def _folder(classes: dict[str, int], splits: tuple[str, ...] = ("train",)) -> Builder:
    return lambda tmp, good: write_image_folder(tmp / "data", classes, size=12, splits=splits) and None


def _folder_then(classes: dict[str, int], damage: Callable[[Path], None]) -> Builder:
    def build(tmp: Path, good: Path) -> None:
        write_image_folder(tmp / "data", classes, size=12)
        damage(tmp / "data" / "train")

    return build


def _mismatched(tmp: Path, good: Path) -> None:
    write_image_folder(tmp / "data", {"cat": 3, "dog": 3}, size=12, splits=("train",))
    write_image_folder(tmp / "data", {"cat": 3, "owl": 3}, size=12, splits=("val",))


def _bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming ``width`` x ``height`` pixels, with almost no data (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def _fer(rows: dict[str, int]) -> Builder:
    return lambda tmp, good: write_fer_csv(tmp / "fer.csv", rows) and None


class _RunsCode:
    """Pickled, this calls os.system on load: what a malicious checkpoint would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def _code_checkpoint(tmp: Path, good: Path) -> None:
    state = torch.load(good / "best.pt", weights_only=True)
    torch.save({**state, "payload": _RunsCode(tmp / "PWNED")}, tmp / "evil.pt")


def _copy_run(edit: Callable[[dict], dict] | None = None, drop: str | None = None) -> Builder:
    def build(tmp: Path, good: Path) -> None:
        shutil.copytree(good, tmp / "run")
        if drop:
            (tmp / "run" / drop).unlink()
        if edit:
            for name in ("best.pt", "last.pt"):
                torch.save(edit(torch.load(tmp / "run" / name, weights_only=True)), tmp / "run" / name)

    return build


def _wrong_shapes(state: dict) -> dict:
    state["model"] = {k: torch.zeros(3, *v.shape[1:]) if v.dim() else v for k, v in state["model"].items()}
    return state


def _truncated_checkpoint(tmp: Path, good: Path) -> None:
    (tmp / "trunc.pt").write_bytes((good / "best.pt").read_bytes()[:300])


def _sweep(params: str, head: str = SWEEP_HEAD) -> Builder:
    return _text("sweep.yaml", head + params)


BUILDERS: dict[str, Builder] = {
    "none": lambda tmp, good: None,
    "config_dir": lambda tmp, good: (tmp / "cfg.yaml").mkdir(),
    "config_bad_yaml": _text("cfg.yaml", "model: {kind: flexible_cnn\n"),
    "config_list": _text("cfg.yaml", "- model\n- data\n"),
    "config_python_tag": lambda tmp, good: (tmp / "cfg.yaml").write_text(
        f"model: !!python/object/apply:os.system ['touch {tmp}/PWNED']\n"
    ),
    "config_binary": _bytes("cfg.yaml", b"\xff\xfe\x00\x81 not text"),
    "config_unknown_section": _text("cfg.yaml", "trainer: {epochs: 3}\n"),
    "config_section_scalar": _text("cfg.yaml", "optim: 0.001\n"),
    "args_json_bad": _text("args.json", "{optim.lr: 0.1"),
    "args_json_list": _text("args.json", "[1, 2]"),
    "args_json_unknown": _text("args.json", '{"optim.learning_rate": 0.1}'),
    "folder_no_train": _folder({"a": 3, "b": 3}, splits=("val",)),
    "folder_no_classes": lambda tmp, good: (tmp / "data" / "train").mkdir(parents=True),
    "folder_empty_class": _folder_then({"a": 3, "b": 3}, lambda t: (t / "empty").mkdir()),
    "folder_no_images": _folder_then(
        {"a": 1, "b": 1},
        lambda t: [(p.with_suffix(".txt").write_text("text"), p.unlink()) for p in t.rglob("*.png")] and None,
    ),
    "folder_mismatch": _mismatched,
    "folder_one_class": _folder({"only": 6}),
    "folder_corrupt": _folder_then({"a": 3, "b": 3}, lambda t: (t / "b" / "broken.jpg").write_bytes(b"\xff\xd8junk")),
    "folder_truncated": _folder_then(
        {"a": 3, "b": 3}, lambda t: (t / "a" / "cut.png").write_bytes((t / "a" / "0.png").read_bytes()[:60])
    ),
    "folder_text_as_png": _folder_then({"a": 3, "b": 3}, lambda t: (t / "a" / "notes.png").write_text("hello")),
    "folder_bomb": _folder_then(
        {"a": 3, "b": 3}, lambda t: (t / "b" / "huge.png").write_bytes(_bomb_png(60000, 60000))
    ),
    "root_is_file": _text("data", "not a folder"),
    "fer_columns": _text("fer.csv", "label,image,Usage\n0,1 2 3,Training\n"),
    "fer_pixels": _text("fer.csv", "emotion,pixels,Usage\n3,1 2 3,Training\n"),
    "fer_not_numbers": _text("fer.csv", "emotion,pixels,Usage\n3," + " ".join(["x"] * 2304) + ",Training\n"),
    "fer_pixel_range": _text("fer.csv", "emotion,pixels,Usage\n3," + " ".join(["300"] * 2304) + ",Training\n"),
    "fer_empty": _text("fer.csv", ""),
    "fer_binary": _bytes("fer.csv", b"emotion,pixels\n\xff\xfe\x00\x81"),
    "fer_no_training": _fer({"PublicTest": 4}),
    "ckpt_code": _code_checkpoint,
    "ckpt_truncated": _truncated_checkpoint,
    "ckpt_text": _text("notes.pt", "this is not a checkpoint"),
    "ckpt_plain_state_dict": lambda tmp, good: torch.save({"weight": torch.zeros(2)}, tmp / "plain.pt"),
    "ckpt_wrong_shapes": _copy_run(_wrong_shapes),
    "run_without_last": _copy_run(drop="last.pt"),
    "run_copy": _copy_run(),
    "other_classes": _folder({"cat": 4, "dog": 4}, splits=("train", "test")),
    "sweep_list": _text("sweep.yaml", "- a\n- b\n"),
    "sweep_distribution": _sweep("parameters:\n  optim.lr: {distribution: normal, min: 0, max: 1}\n"),
    "sweep_misspelt": _sweep("parameters:\n  optim.learning_rate: {values: [0.1, 0.01]}\n"),
    "sweep_metric": _sweep("parameters:\n  optim.lr: {values: [0.1]}\n", SWEEP_HEAD.replace("val/acc", "test/acc")),
    "sweep_method": _sweep("parameters:\n  optim.lr: {values: [0.1]}\n", SWEEP_HEAD.replace("random", "genetic")),
    "sweep_controller_pruner": _sweep(
        "controller: {type: cloud, pruner: hyperbandd}\nparameters:\n  optim.lr: {values: [0.1]}\n"
    ),
    "sweep_no_params": _sweep(""),
    "sweep_base_missing": _sweep("parameters:\n  optim.lr: {values: [0.1]}\n", SWEEP_HEAD.replace("demo-", "nope-")),
    "sweep_ok": _sweep("parameters:\n  optim.lr: {values: [0.1]}\n"),
    # valid first values, so only a check of every choice or bound finds these before the trials do
    "sweep_bad_choice": _sweep("parameters:\n  optim.lr: {values: [0.01, -1.0]}\n"),
    "sweep_bad_bound": _sweep("parameters:\n  model.dense_dropout: {min: 0.0, max: 1.5}\n"),
    "sweep_bad_list_item": _sweep("parameters:\n  model.num_filters: {values: [[8, 16], [8, 0]]}\n"),
}

# (id, builder, command line, words the message must contain)
CASES: list[tuple[str, str, str, list[str]]] = [
    # ---- config files
    ("config-missing", "none", "train {tmp}/nope.yaml " + TRAIN, ["nope.yaml", "does not exist"]),
    ("config-is-a-folder", "config_dir", "train {tmp}/cfg.yaml " + TRAIN, ["CONFIG", "cfg.yaml", "is a directory"]),
    ("config-bad-yaml", "config_bad_yaml", "train {tmp}/cfg.yaml " + TRAIN, ["cfg.yaml", "not valid YAML"]),
    ("config-a-list", "config_list", "train {tmp}/cfg.yaml " + TRAIN, ["cfg.yaml", "mapping of sections", "list"]),
    ("config-python-tag", "config_python_tag", "train {tmp}/cfg.yaml " + TRAIN, ["cfg.yaml", "not valid YAML"]),
    ("config-not-text", "config_binary", "train {tmp}/cfg.yaml " + TRAIN, ["cannot read", "cfg.yaml"]),
    (
        "config-unknown-section",
        "config_unknown_section",
        "config {tmp}/cfg.yaml",
        ["trainer", "unknown field", "train"],
    ),
    ("config-section-scalar", "config_section_scalar", "config {tmp}/cfg.yaml", ["optim", "0.001"]),
    # ---- --set overrides and --args-json
    ("set-no-equals", "none", "config --set train.epochs", ["train.epochs", "section.field=value"]),
    ("set-empty-key-part", "none", "config --set train..epochs=3", ["train..epochs", "section.field=value"]),
    ("set-into-a-value", "none", "config --set optim.lr.max=3", ["optim.lr", "valid number"]),
    ("set-nan-lr", "none", "config --set optim.lr=nan", ["optim.lr", "nan"]),
    ("set-fractional-epochs", "none", "config --set train.epochs=1.5", ["train.epochs", "integer", "1.5"]),
    (
        "set-batch-size-zero",
        "none",
        "config --set data.batch_size=0",
        ["data.batch_size", "greater than or equal to 1"],
    ),
    ("set-wandb-mode", "none", "config --set logging.wandb.mode=sometimes", ["logging.wandb.mode", "offline"]),
    ("set-channels", "none", "config --set data.channels=2", ["data.channels", "1", "3"]),
    ("set-device-gpu-99", "none", "train " + TRAIN + " --set train.device=cuda:99", ["train.device", "cuda:99"]),
    ("args-json-missing", "none", "train --args-json {tmp}/nope.json " + TRAIN, ["--args-json", "nope.json"]),
    ("args-json-not-json", "args_json_bad", "train --args-json {tmp}/args.json " + TRAIN, ["--args-json", "args.json"]),
    ("args-json-a-list", "args_json_list", "train --args-json {tmp}/args.json " + TRAIN, ["JSON object", "list"]),
    (
        "args-json-unknown",
        "args_json_unknown",
        "train --args-json {tmp}/args.json " + TRAIN,
        ["optim.learning_rate", "unknown field", "lr"],
    ),
    # ---- image folders
    ("data-root-missing", "none", "train " + TRAIN + " " + FOLDER, ["data.root", "/data", "does not exist"]),
    ("data-root-is-a-file", "root_is_file", "train " + TRAIN + " " + FOLDER, ["data.root", "/data", "is a file"]),
    (
        "data-root-is-a-csv",
        "fer_pixels",
        "train " + TRAIN + " " + FOLDER.replace("{tmp}/data", "{tmp}/fer.csv"),
        ["data.root", "fer.csv", "is a file", "data.source=fer2013_csv"],
    ),
    ("data-no-train-folder", "folder_no_train", "train " + TRAIN + " " + FOLDER, ["no train/ folder", "<class>"]),
    ("data-no-class-folders", "folder_no_classes", "train " + TRAIN + " " + FOLDER, ["no class folders", "<class>"]),
    ("data-empty-class", "folder_empty_class", "train " + TRAIN + " " + FOLDER, ["train/empty", "has no images"]),
    ("data-no-images", "folder_no_images", "train " + TRAIN + " " + FOLDER, ["has no images", ".png"]),
    (
        "data-classes-differ",
        "folder_mismatch",
        "train " + TRAIN + " " + FOLDER,
        ["different classes", "extra ['owl']", "missing ['dog']"],
    ),
    ("data-single-class", "folder_one_class", "train " + TRAIN + " " + FOLDER, ["1 class", "at least 2"]),
    ("data-corrupt-image", "folder_corrupt", "train " + TRAIN + " " + FOLDER, ["broken.jpg", "skip_corrupt"]),
    ("data-truncated-image", "folder_truncated", "train " + TRAIN + " " + FOLDER, ["cut.png", "skip_corrupt"]),
    ("data-text-named-png", "folder_text_as_png", "train " + TRAIN + " " + FOLDER, ["notes.png", "cannot decode"]),
    ("data-decompression-bomb", "folder_bomb", "train " + TRAIN + " " + FOLDER, ["huge.png", "cannot decode"]),
    (
        "data-offline-torchvision",
        "none",
        "train " + TRAIN + " --set data.source=cifar10 --set data.root={tmp}/tv",
        ["cifar10", "/tv", "place"],
    ),
    # ---- FER2013 CSVs
    ("fer-missing", "none", "train " + TRAIN + " " + FER, ["fer.csv", "does not exist"]),
    (
        "fer-root-is-a-folder",
        "folder_one_class",
        "train " + TRAIN + " " + FER.replace("{tmp}/fer.csv", "{tmp}/data"),
        ["data.root", "/data", "is a folder", "CSV file"],
    ),
    ("fer-wrong-columns", "fer_columns", "train " + TRAIN + " " + FER, ["fer.csv", "missing emotion, pixels"]),
    ("fer-wrong-pixel-count", "fer_pixels", "train " + TRAIN + " " + FER, ["fer.csv:2", "3 values", "2304"]),
    ("fer-pixels-not-numbers", "fer_not_numbers", "train " + TRAIN + " " + FER, ["fer.csv:2", "integers 0..255"]),
    ("fer-pixels-out-of-range", "fer_pixel_range", "train " + TRAIN + " " + FER, ["fer.csv:2", "integers 0..255"]),
    ("fer-empty-file", "fer_empty", "train " + TRAIN + " " + FER, ["fer.csv", "no header"]),
    ("fer-not-utf8", "fer_binary", "train " + TRAIN + " " + FER, ["fer.csv", "UTF-8"]),
    ("fer-no-training-rows", "fer_no_training", "train " + TRAIN + " " + FER, ["fer.csv", "no Training rows"]),
    # ---- checkpoints
    ("ckpt-missing", "none", "evaluate {tmp}/nope.pt", ["nope.pt", "does not exist", "best.pt"]),
    ("ckpt-runs-code", "ckpt_code", "evaluate {tmp}/evil.pt", ["evil.pt", "refusing", "weights_only"]),
    ("ckpt-truncated", "ckpt_truncated", "evaluate {tmp}/trunc.pt", ["trunc.pt", "corrupt or truncated"]),
    ("ckpt-text-file", "ckpt_text", "evaluate {tmp}/notes.pt", ["notes.pt", "corrupt or truncated"]),
    ("ckpt-not-flexcnn", "ckpt_plain_state_dict", "evaluate {tmp}/plain.pt", ["plain.pt", "not a flexcnn checkpoint"]),
    ("ckpt-weights-mismatch", "ckpt_wrong_shapes", "evaluate {tmp}/run", ["does not match its model config"]),
    (
        "ckpt-other-data-classes",
        "other_classes",
        "evaluate {good} --data source=imagefolder --data root={tmp}/data",
        ["classes", "differ from the checkpoint"],
    ),
    ("resume-no-checkpoint", "run_without_last", "train --resume {tmp}/run " + TRAIN, ["cannot resume", "last.pt"]),
    (
        "resume-other-model",
        "run_copy",
        "train --resume {tmp}/run --set model.num_filters=[4,8]",
        ["cannot resume", "different model config"],
    ),
    ("resume-not-a-run", "none", "train --resume {tmp}/nowhere " + TRAIN, ["cannot resume", "nowhere"]),
    # ---- sweep YAMLs and storage URLs (flexcnn optuna)
    ("sweep-missing", "none", "optuna run {tmp}/nope.yaml " + OPTUNA, ["nope.yaml", "does not exist"]),
    ("sweep-a-list", "sweep_list", "optuna run {tmp}/sweep.yaml " + OPTUNA, ["sweep.yaml", "mapping", "list"]),
    (
        "sweep-unknown-distribution",
        "sweep_distribution",
        "optuna run {tmp}/sweep.yaml " + OPTUNA,
        ["optim.lr", "normal"],
    ),
    ("sweep-misspelt-path", "sweep_misspelt", "optuna run {tmp}/sweep.yaml " + OPTUNA, ["optim.learning_rate"]),
    ("sweep-metric", "sweep_metric", "optuna run {tmp}/sweep.yaml " + OPTUNA, ["metric", "test/acc", "val/acc"]),
    ("sweep-method", "sweep_method", "optuna run {tmp}/sweep.yaml " + OPTUNA, ["method", "genetic", "bayes"]),
    (
        "sweep-controller-pruner",
        "sweep_controller_pruner",
        "optuna run {tmp}/sweep.yaml " + OPTUNA,
        ["controller.pruner", "hyperbandd", "asha"],
    ),
    ("workers-word", "sweep_ok", "optuna run {tmp}/sweep.yaml --workers many " + OPTUNA, ["--workers", "many", "auto"]),
    ("workers-zero", "sweep_ok", "optuna run {tmp}/sweep.yaml --workers 0 " + OPTUNA, ["--workers", "'0'", "auto"]),
    (
        "sweep-value-rejected",
        "sweep_bad_choice",
        "optuna run {tmp}/sweep.yaml " + OPTUNA,
        ["optim.lr", "can take -1,", "greater than 0"],
    ),
    (
        "sweep-bound-rejected",
        "sweep_bad_bound",
        "optuna run {tmp}/sweep.yaml " + OPTUNA,
        ["model.dense_dropout", "1.5", "less than 1"],
    ),
    (
        "sweep-list-item-rejected",
        "sweep_bad_list_item",
        "optuna run {tmp}/sweep.yaml " + OPTUNA,
        ["model.num_filters", "[8,0]", "model.num_filters.1"],
    ),
    ("sweep-no-parameters", "sweep_no_params", "optuna run {tmp}/sweep.yaml " + OPTUNA, ["parameters"]),
    (
        "sweep-base-config-missing",
        "sweep_base_missing",
        "optuna run {tmp}/sweep.yaml " + OPTUNA,
        ["nope-digits.yaml", "not found"],
    ),
    (
        "storage-scheme",
        "sweep_ok",
        "optuna run {tmp}/sweep.yaml --storage redis://h/0 --n-trials 1",
        ["redis", "unsupported scheme", "sqlite:///"],
    ),
    (
        "storage-not-understood",
        "sweep_ok",
        "optuna run {tmp}/sweep.yaml --storage study.txt --n-trials 1",
        ["study.txt", "not understood", "journal"],
    ),
    ("storage-empty-journal", "none", "optuna status --storage journal:", ["journal:", "file path"]),
    (
        "storage-unreachable",
        "none",
        "optuna status --storage postgresql://bob:s3cr3t@127.0.0.1:9/db",
        ["cannot open storage", "bob:***@127.0.0.1:9"],
    ),
    ("storage-no-such-file", "none", "optuna best --storage sqlite:///{tmp}/none.db", ["none.db", "does not exist"]),
    # ---- command-line arguments
    ("cli-unknown-command", "none", "trian", ["No such command", "trian"]),
    ("cli-unknown-option", "none", "train --epochs 3", ["No such option", "--epochs"]),
    ("cli-bad-choice", "none", "train --wandb-mode sometimes", ["--wandb-mode", "sometimes", "offline"]),
    ("cli-bad-split", "none", "evaluate x.pt --split holdout", ["--split", "holdout", "test"]),
    ("cli-trials-zero", "sweep_ok", "optuna run {tmp}/sweep.yaml --n-trials 0", ["--n-trials", "0"]),
    ("cli-missing-argument", "none", "evaluate", ["Missing argument", "CHECKPOINT"]),
    ("cli-output-dir-is-file", "config_list", "train --output-dir {tmp}/cfg.yaml", ["--output-dir", "cfg.yaml"]),
]


@pytest.fixture(scope="module")
def good_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real, tiny run folder (best.pt, last.pt) that checkpoint cases copy or damage."""
    from flexcnn.config import load_config
    from flexcnn.run import run

    folder = tmp_path_factory.mktemp("good") / "run"
    run(load_config(None, [*TINY, "train.epochs=1"]), run_dir=folder)
    return folder


def invoke(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run the console entry point in-process; return its exit code and everything it printed."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out = capsys.readouterr()
    code = exit_info.value.code
    return (code if isinstance(code, int) else 1), out.out + out.err


def _error_lines(printed: str) -> int:
    return sum(line.lower().startswith("error:") for line in printed.splitlines())


def results_under(folder: Path) -> list[Path]:
    """Files under ``folder`` that could pass for a result (or be a torn one)."""
    if not folder.exists():
        return []
    return [p for p in folder.rglob("*") if p.name in RESULT_FILES or p.name.endswith(".tmp")]


@pytest.mark.parametrize(("builder", "command", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_message(
    builder: str,
    command: str,
    words: list[str],
    tmp_path: Path,
    good_run: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # sweep files name configs/ relative to the repo
    runs = tmp_path / "runs"
    BUILDERS[builder](tmp_path, good_run)
    before = {p: p.stat().st_mtime_ns for p in good_run.iterdir()}
    argv = shlex.split(command.format(tmp=tmp_path, runs=runs, good=good_run))
    code, printed = invoke(argv, capsys)
    assert code == 2, printed
    assert "Traceback" not in printed
    assert _error_lines(printed) == 1, printed  # one message, not a cascade
    for word in words:
        assert word in printed, f"{word!r} missing from: {printed}"
    assert not results_under(runs), results_under(runs)
    assert not runs.exists() or not any(runs.iterdir()), f"a run folder was left behind: {list(runs.iterdir())}"
    assert not (tmp_path / "PWNED").exists(), "a config or checkpoint ran code"
    assert {p: p.stat().st_mtime_ns for p in good_run.iterdir()} == before  # the good run was not touched


def test_the_catalogue_is_big_enough() -> None:
    kinds = {c[0].split("-")[0] for c in CASES}
    assert len(CASES) >= 40
    assert {"config", "set", "data", "fer", "ckpt", "resume", "sweep", "storage", "cli"} <= kinds


# ---- inputs that look odd but are fine: they must train, not fail


@pytest.mark.slow
def test_mixed_modes_and_a_very_large_image_train(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "data"
    write_image_folder(root, {"gray": 4}, size=12, mode="L")
    write_image_folder(root, {"rgb": 4}, size=12, mode="RGB", seed=1)
    write_image_folder(root, {"rgba": 4}, size=12, mode="RGBA", seed=2)
    big = np.full((3000, 3000, 3), 200, dtype=np.uint8)  # 9 Mpx, compresses to a few KB
    Image.fromarray(big).save(root / "train" / "rgb" / "big.png")
    runs = tmp_path / "runs"
    argv = shlex.split(TRAIN.format(runs=runs)) + shlex.split(FOLDER.format(tmp=tmp_path))
    code, printed = invoke(["train", *argv, "--set", "data.val_fraction=0.25"], capsys)
    assert code == 0, printed
    (summary,) = runs.rglob("summary.json")
    assert '"status": "completed"' in summary.read_text()


# ---- the same contract through a real process (exit status and stderr as a shell sees them)

SUBPROCESS_CASES = ["config-python-tag", "data-corrupt-image", "ckpt-runs-code", "cli-unknown-option"]


@pytest.mark.slow
@pytest.mark.parametrize("case_id", SUBPROCESS_CASES)
def test_bad_input_in_a_real_process(case_id: str, tmp_path: Path, good_run: Path) -> None:
    _, builder, command, words = next(c for c in CASES if c[0] == case_id)
    BUILDERS[builder](tmp_path, good_run)
    runs = tmp_path / "runs"
    proc = flexcnn_cli(*shlex.split(command.format(tmp=tmp_path, runs=runs, good=good_run)), timeout=180)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert _error_lines(proc.stderr) == 1, proc.stderr
    for word in words:
        assert word in proc.stderr
    assert not results_under(runs)
    assert not (tmp_path / "PWNED").exists()
