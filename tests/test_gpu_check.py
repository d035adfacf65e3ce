"""``benchmarks/gpu_check.py --accelerator cpu``: every accelerator path of the package runs
and passes on CPU, and the table names each path once (a GPU machine runs the same script)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

PATHS = [
    "data: glyph pairs built here",
    "fit fp32",
    "fit bf16-mixed",
    "fit bf16-true + feature cache",
    "fit deterministic, pooled head 2x2 of 3x3",
    "validate",
    "test",
    "predict",
    "evaluate",
    "search",
    "export pt2",
    "export onnx",
    "fit, ddp strategy",
    "data: 200 px JPEG copies",
    "ttl model, loader alone (JPEG), bf16-mixed sizes",
    "ttl model, Trainer + JPEG loader, bf16-mixed",
    "ttl model, bare step (random tensors), bf16-mixed",
    "ttl model, does the loader keep up with the step",
    "ttl model, Trainer + feature cache, bf16-mixed",
    "ttl model, goal: >= 6,000 images/s with the cache",
]


@pytest.mark.slow
def test_gpu_check_passes_every_path_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "check"
    env = {key: value for key, value in os.environ.items() if key != "MASTER_PORT"}
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--accelerator", "cpu",
         "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    document = json.loads((out / "gpu_check.json").read_text())
    assert [row["path"] for row in document["rows"]] == PATHS
    assert all(row["passed"] for row in document["rows"])
    table = (out / "gpu_check.md").read_text()
    assert table.count("| pass |") == len(PATHS) and "images/s" in table
    assert "2 runs bit-identical" in table and "bf16 cache" in table
    assert "x the bare step: keeps up" in table  # on CPU the JPEG loader outruns the step
    assert "a GPU goal; this ran on the CPU" in table
