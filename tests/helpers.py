"""Small helpers that several test modules share: writing image folders and FER CSVs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import REPO


def write_image_folder(
    root: Path,
    classes: dict[str, int],
    *,
    size: int = 20,
    splits: tuple[str, ...] = ("train",),
    mode: str = "RGB",
    seed: int = 0,
) -> Path:
    """Write ``root/<split>/<class>/<i>.png`` with class-dependent colours (learnable)."""
    rng = np.random.default_rng(seed)
    for split in splits:
        for c, (name, count) in enumerate(classes.items()):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                base = np.full((size, size, 3), 40 + 60 * c, dtype=np.int16)
                noise = rng.integers(-20, 20, size=(size, size, 3))
                array = np.clip(base + noise, 0, 255).astype(np.uint8)
                Image.fromarray(array, "RGB").convert(mode).save(folder / f"{i}.png")
    return root


def write_fer_csv(path: Path, rows_per_usage: dict[str, int], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    lines = ["emotion,pixels,Usage"]
    for usage, count in rows_per_usage.items():
        for i in range(count):
            pixels = " ".join(str(v) for v in rng.integers(0, 256, 48 * 48))
            lines.append(f"{i % 7},{pixels},{usage}")
    path.write_text("\n".join(lines) + "\n")
    return path


def flexcnn_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run the real console entry point in a subprocess (exit codes and stderr as a user sees them)."""
    return subprocess.run(
        [sys.executable, "-m", "flexcnn", *args],
        cwd=cwd or REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
