"""DDP on CPU (gloo, 2 processes): the same retrieval metrics as one process.

The CLI runs in a subprocess: Lightning's DDP launcher re-executes the command line for rank 1.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_pairs
from lightning_siamese.data import SiameseDataModule


def run_cli(*args: str, cwd: Path) -> None:
    # A fresh launch: drop what an earlier in-process DDP run may have left in the environment
    # (MASTER_PORT would point the new processes at a port that is still taken).
    launch = {"MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK"}
    env = {key: value for key, value in os.environ.items() if key not in launch}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    result = subprocess.run(
        [sys.executable, "-m", "lightning_siamese", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def validation_metrics(log_dir: Path) -> dict[str, float]:
    rows = list(csv.DictReader((log_dir / "metrics.csv").open()))
    return {key: float(value) for row in rows for key, value in row.items() if value and "/" in key}


def test_ddp_validation_equals_one_process(tmp_path: Path) -> None:
    root, run = tmp_path / "pairs", tmp_path / "run"
    write_pairs(root, 46)
    fractions = "[0.5,0.3,0.2]"
    probe = SiameseDataModule(str(root), split_fractions=(0.5, 0.3, 0.2), num_workers=0)
    probe.setup("validate")
    val_size = len(probe.splits["val"])
    assert val_size % 2 == 1, "the validation split must not divide evenly over 2 processes"

    def logger(name: str) -> str:
        init = {"save_dir": str(tmp_path / "logs"), "name": name, "version": ""}
        return json.dumps({"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": init})

    common = [
        f"--data.root={root}", "--data.image_size=32", "--data.batch_size=4",
        "--data.num_workers=0", f"--data.split_fractions={fractions}",
        "--model.backbone=resnet18", "--model.weights=none", "--model.head=pooled",
        f"--trainer.default_root_dir={run}", "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
    ]  # fmt: skip
    ddp = ["--trainer.strategy=ddp", "--trainer.devices=2"]
    run_cli("fit", *common, *ddp, "--trainer.max_epochs=1", "--validate_before_fit=false",
            f"--trainer.logger={logger('fit')}", cwd=tmp_path)  # fmt: skip
    checkpoint = run / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()

    run_cli("validate", *common, *ddp, f"--ckpt_path={checkpoint}",
            f"--trainer.logger={logger('two')}", cwd=tmp_path)  # fmt: skip
    run_cli("validate", *common, "--trainer.devices=1", f"--ckpt_path={checkpoint}",
            f"--trainer.logger={logger('one')}", cwd=tmp_path)  # fmt: skip
    two = validation_metrics(tmp_path / "logs" / "two")
    one = validation_metrics(tmp_path / "logs" / "one")
    assert two["val/pairs"] == one["val/pairs"] == val_size
    for key in ("val/recall@1", "val/recall@5", "val/mrr", "val/median_rank",
                "val/triplet_accuracy", "val/cosine_positive"):  # fmt: skip
        assert two[key] == pytest.approx(one[key], abs=1e-6), key
