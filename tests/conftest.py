"""Fixtures that write tiny real image folders into ``tmp_path``; nothing downloads."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image, ImageDraw

TESTS_DIR = Path(__file__).resolve().parent


def pattern_image(index: int, size: int = 32, variant: int = 0) -> Image.Image:
    """A distinct picture per ``index``: a coloured shape on a tinted background.

    ``variant`` redraws the same concept with a small shift and other line width, so left and
    right of a pair look alike without being identical.
    """
    rng = np.random.default_rng(index)
    background = tuple(int(v) for v in rng.integers(150, 256, 3))
    colour = tuple(int(v) for v in rng.integers(0, 120, 3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    shift = 2 * variant
    box = [int(v) for v in rng.integers(2, size // 2, 2)]
    corners = (box[0] + shift, box[1], box[0] + size // 2 + shift, box[1] + size // 2)
    shape = index % 3
    if shape == 0:
        draw.ellipse(corners, fill=colour)
    elif shape == 1:
        draw.rectangle(corners, fill=colour)
    else:
        draw.polygon(
            [(corners[0], corners[3]), (corners[2], corners[3]), (corners[0], corners[1])],
            fill=colour,
        )
    draw.line((0, index % size, size, (3 * index) % size), fill=colour, width=1 + variant)
    return image


def write_pairs(
    root: Path, count: int, size: int = 32, start: int = 0, groups: dict[str, str] | None = None
) -> list[str]:
    """Write ``count`` look-alike pairs (JPEG on the left, PNG on the right); return their names."""
    (root / "left").mkdir(parents=True, exist_ok=True)
    (root / "right").mkdir(parents=True, exist_ok=True)
    names = []
    for index in range(start, start + count):
        name = f"pair{index:04d}"
        pattern_image(index, size).save(root / "left" / f"{name}.jpg", quality=95)
        pattern_image(index, size, variant=1).save(root / "right" / f"{name}.png")
        names.append(name)
    if groups:
        lines = ["name,group"] + [f"{name},{group}" for name, group in groups.items()]
        (root / "pairs.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return names


@pytest.fixture
def pair_folder(tmp_path: Path) -> Path:
    """40 clean pairs of 32x32 images."""
    root = tmp_path / "pairs"
    write_pairs(root, 40)
    return root


@pytest.fixture(autouse=True)
def _offline_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Keep every run's side effects (W&B files, caches) inside the test's folder."""
    for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("XDG_CACHE_HOME", os.environ.get("LS_TEST_CACHE", str(tmp_path / "cache")))
    yield
    # A W&B run stays open until the process exits; close it so the next test starts its own.
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()


def cairo_missing_reason() -> str | None:
    """Why Fluent emoji cannot be rendered here (cairosvg or the cairo library missing)."""
    try:
        import cairosvg  # noqa: F401
    except (ImportError, OSError) as error:  # OSError: cairocffi finds no libcairo
        return f"cairosvg cannot render here: {error}"
    return None


def npm_unreachable_reason() -> str | None:
    npm = shutil.which("npm")
    if npm is None:
        return "npm is not installed"
    try:
        result = subprocess.run(
            [npm, "view", "emoji-datasource-google@16.0.0", "version"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        return "the npm registry did not answer in 60 s"
    if result.returncode != 0:
        return f"the npm registry is not reachable: {result.stderr.strip()[-200:]}"
    return None


def run_cli(
    *args: str,
    cwd: Path,
    timeout: float = 600,
    drop_env: Sequence[str] = (),
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``lightning-siamese *args`` in a subprocess of its own process group (tests/ on its
    PYTHONPATH, one thread, without the ``drop_env`` variables, with ``extra_env``), killed
    whole if it outlives ``timeout``; stdout and stderr together in ``stdout``."""
    # A fresh launch: drop what an earlier in-process DDP run may have left in the environment
    # (MASTER_PORT would point the new processes at a port that is still taken).
    launch = {"MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK"}
    dropped = launch | set(drop_env)
    env = {key: value for key, value in os.environ.items() if key not in dropped}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONPATH=str(TESTS_DIR))
    env.update(extra_env or {})
    process = subprocess.Popen(
        [sys.executable, "-m", "lightning_siamese", *args],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"still running after {timeout} s (hung?):\n{output[-3000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, output, "")


#: The tiny, fast training setup every CLI test starts from.
TINY_CONFIG = Path(__file__).resolve().parent / "configs" / "tiny.yaml"


def tiny_args(root: Path, run: Path) -> list[str]:
    """``-c tests/configs/tiny.yaml`` with this data folder, run folder and a CSV logger."""
    logger = {
        "class_path": "pytorch_lightning.loggers.CSVLogger",
        "init_args": {"save_dir": str(run)},
    }
    return [
        "-c",
        str(TINY_CONFIG),
        f"--data.root={root}",
        f"--trainer.default_root_dir={run}",
        f"--trainer.logger={json.dumps(logger)}",
    ]


def tiny_model(**overrides: Any) -> Any:
    """A ``SiameseModel`` with the model settings of the tiny config (and its image size)."""
    from lightning_siamese.training.model import SiameseModel

    config = yaml.safe_load(TINY_CONFIG.read_text(encoding="utf-8"))
    options = {**config["model"], "image_size": config["data"]["image_size"]}
    return SiameseModel(**{**options, **overrides})


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """One tiny ``fit`` shared by the tests that need a checkpoint: (pair folder, run, best ckpt).

    Read-only for its users: copy before changing anything in it.
    """
    from lightning_siamese.cli.main import main

    base = tmp_path_factory.mktemp("trained")
    root, run = base / "pairs", base / "run"
    write_pairs(root, 40)
    args = [*tiny_args(root, run), "--trainer.max_epochs=1", "--trainer.logger=false"]
    assert main(["fit", *args]) == 0
    best = sorted((run / "checkpoints").glob("epoch*.ckpt"))
    assert best, "fit wrote no best checkpoint"
    return root, run, best[-1]


def brute_force_rank_metrics(
    similarity: Sequence[Sequence[float]],
    tied: Callable[[int, int], bool] | None = None,
    recall_at: Sequence[int] = (1, 5, 10, 20),
) -> dict[str, float]:
    """recall@k, MRR and median rank straight from their definition, with ties broken at random:
    for query ``i`` (true match ``i``), every position the true match can take among its tied
    items is listed and weighted equally. ``tied(i, j)`` says whether item ``j`` ties with the
    true match (default: an equal similarity)."""
    recalls = dict.fromkeys(recall_at, 0.0)
    reciprocal, expected_ranks = 0.0, []
    for i, row in enumerate(similarity):
        ties = [j for j in range(len(row)) if j != i and (tied(i, j) if tied else row[j] == row[i])]
        above = [j for j in range(len(row)) if j != i and j not in ties and row[j] > row[i]]
        positions = range(len(above) + 1, len(above) + len(ties) + 2)
        for k in recall_at:
            recalls[k] += sum(position <= k for position in positions) / len(positions)
        reciprocal += sum(1 / position for position in positions) / len(positions)
        expected_ranks.append(sum(positions) / len(positions))
    count = len(similarity)
    metrics = {f"recall@{k}": value / count for k, value in recalls.items()}
    metrics["mrr"] = reciprocal / count
    metrics["median_rank"] = sorted(expected_ranks)[(count - 1) // 2]  # the lower middle
    return metrics
