"""A fit killed mid-epoch (SIGTERM, SIGKILL) or while writing a checkpoint resumes with
``--ckpt_path last``, finishes, and ends with the same metrics and weights as an uninterrupted run
(deterministic, fixed seed)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import tiny_args, write_pairs
from lightning_siamese.cli.main import main
from lightning_siamese.training.checkpoint_files import partial_files

TESTS = Path(__file__).resolve().parent


def fit_args(run: Path, root: Path, *extra: str) -> list[str]:
    return [
        *tiny_args(root, run),
        "--trainer.max_epochs=3",
        "--trainer.deterministic=true",
        "--validate_before_fit=false",
        *extra,
    ]


def fit(run: Path, root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """The fit in a process of its own (where a kill ends only it), on one thread."""
    args = fit_args(run, root, *extra)
    env = {**os.environ, "PYTHONPATH": str(TESTS), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "lightning_siamese", "fit", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def final_metrics(run: Path) -> dict[str, float]:
    logs = sorted(run.glob("lightning_logs/version_*/metrics.csv"))
    rows = [row for log in logs for row in csv.DictReader(log.open())]
    values: dict[str, float] = {}
    for row in rows:  # the last value of each metric, across the logs of both processes
        for key, value in row.items():
            if value and key.startswith(("val/", "train/loss_epoch")):
                values[key] = float(value)
    return values


KILLERS = {
    "SIGTERM": ("SignalAt", {"epoch": 1, "batch": 1, "signal_name": "SIGTERM"}),
    "SIGKILL": ("SignalAt", {"epoch": 1, "batch": 1, "signal_name": "SIGKILL"}),
    "SIGKILL while saving": ("KillWhileSaving", {"epoch": 1}),
}


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One uninterrupted fit for every kill: (the pair folder, its run folder)."""
    base = tmp_path_factory.mktemp("interrupt")
    root = base / "pairs"
    write_pairs(root, 40)
    result = fit(base / "plain", root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, base / "plain"


@pytest.mark.slow
@pytest.mark.parametrize("kill", sorted(KILLERS))
def test_killed_fit_resumes_to_the_same_result(
    tmp_path: Path, kill: str, plain: tuple[Path, Path]
) -> None:
    root, reference_run = plain
    name, options = KILLERS[kill]
    killer = {"class_path": f"interrupt_callbacks.{name}", "init_args": options}
    run = tmp_path / "interrupted"
    killed = fit(run, root, f"--trainer.callbacks+={json.dumps(killer)}")
    checkpoints = run / "checkpoints"
    last = torch.load(checkpoints / "last.ckpt", weights_only=True)
    if kill == "SIGTERM":  # Lightning stops gracefully on SIGTERM, before the planned end
        assert "Received SIGTERM" in killed.stderr and last["epoch"] < 2
    else:  # gone at once: the finished epoch's checkpoint is intact
        assert killed.returncode == -9 and last["epoch"] == 0
    partial = partial_files(checkpoints)
    if kill == "SIGKILL while saving":  # half of epoch 1's checkpoint was on disk
        assert len(partial) == 1 and partial[0].stat().st_size > 0
    for path in checkpoints.glob("*.ckpt"):  # every checkpoint file is whole
        torch.load(path, weights_only=True)

    # The resume in this process, on one thread as the fits in their own processes.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["fit", *fit_args(run, root), "--ckpt_path=last"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert not partial_files(checkpoints)
    final = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    reference = torch.load(reference_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["epoch"] == reference["epoch"] == 2
    assert final["global_step"] == reference["global_step"]
    for name, value in reference["state_dict"].items():  # tolerance: exact on one CPU thread
        torch.testing.assert_close(final["state_dict"][name], value, rtol=0, atol=1e-6, msg=name)
    ours, theirs = final_metrics(run), final_metrics(reference_run)
    assert ours.keys() == theirs.keys() and "val/recall@1" in ours
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value, abs=1e-6), key


def test_last_checkpoint_follows_every_epoch(tmp_path: Path) -> None:
    """Also when the monitored metric stops improving (Lightning alone keeps the best's copy)."""
    root, run = tmp_path / "pairs", tmp_path / "run"
    write_pairs(root, 40)
    # Nothing trains (all frozen, learning rate 0): val/recall@1 is the same every epoch, so the
    # best checkpoint stays epoch 0's while the run goes on to epoch 2.
    still = ["--model.freeze=all", "--model.optimizer=torch.optim.SGD", "--model.optimizer.lr=0"]
    args = [*tiny_args(root, run), "--trainer.max_epochs=3", "--validate_before_fit=false", *still]
    assert main(["fit", *args]) == 0
    (best,) = (run / "checkpoints").glob("epoch*.ckpt")
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert torch.load(best, weights_only=True)["epoch"] == 0
    assert last["epoch"] == 2 and last["global_step"] > 0
