"""A resumed fit is the uninterrupted fit: from an end-of-epoch checkpoint (a shorter fit
continued) and from a mid-epoch one (the processes killed right after it was written), on one
process and on two (DDP, gloo), with and without augmentation. Each epoch's order, negatives and
augmentation follow from (data seed, epoch) alone, and the checkpoint holds the place in the
epoch and the random state, so every step after the resume has the uninterrupted run's loss and
the run ends with its weights and metrics."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from conftest import run_cli, tiny_args, write_pairs
from lightning_siamese.cli.main import main

EPOCHS = 3


def fit(run: Path, root: Path, processes: int, *extra: str) -> None:
    """The fit, in a process of its own where it is killed or runs on several processes, else
    in this one (on one thread, as the subprocesses are: the runs compare to 1e-6)."""
    devices = [f"--trainer.devices={processes}", "--trainer.accelerator=cpu"]
    if processes > 1:
        devices.append("--trainer.strategy=ddp")
    # Loader workers (the epoch-0 replay of a resume showed with workers only); under DDP they
    # start from a fork server (data.sampling.forkserver).
    args = [
        *tiny_args(root, run),
        "--data.num_workers=2",
        "--data.batch_size=4",
        "--trainer.deterministic=true",
        "--seed_everything=3",
        "--validate_before_fit=false",
        f"--trainer.max_epochs={EPOCHS}",
        *devices,
        *extra,
    ]
    killed = any("SaveThenKill" in arg for arg in extra)
    if processes == 1 and not killed:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            assert main(["fit", *args]) == 0
        finally:
            torch.set_num_threads(threads)
        return
    result = run_cli("fit", *args, cwd=run.parent, timeout=600)
    assert result.returncode == (-9 if killed else 0), result.stdout[-3000:]


def step_losses(run: Path) -> dict[int, float]:
    """train/loss_step by global step, over every log of the run folder (both fits)."""
    losses = {}
    for log in sorted(run.glob("lightning_logs/version_*/metrics.csv")):
        for row in csv.DictReader(log.open()):
            if row.get("train/loss_step"):
                losses[int(row["step"])] = float(row["train/loss_step"])
    return losses


def last_values(run: Path) -> dict[str, float]:
    values = {}
    for log in sorted(run.glob("lightning_logs/version_*/metrics.csv")):
        for row in csv.DictReader(log.open()):
            values.update({k: float(v) for k, v in row.items() if v and k.startswith("val/")})
    return values


def assert_same_run(resumed: Path, reference: Path, resumed_from_step: int) -> None:
    final = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    expected = torch.load(reference / "checkpoints" / "last.ckpt", weights_only=True)
    assert (final["epoch"], final["global_step"]) == (expected["epoch"], expected["global_step"])
    for name, value in expected["state_dict"].items():  # exact on one CPU thread
        torch.testing.assert_close(final["state_dict"][name], value, rtol=0, atol=1e-6, msg=name)
    ours, theirs = step_losses(resumed), step_losses(reference)
    after = [step for step in theirs if step >= resumed_from_step]
    assert after and all(step in ours for step in after)
    for step in after:  # from the first step after the resume on
        assert ours[step] == pytest.approx(theirs[step], abs=1e-6), f"step {step}"
    assert last_values(resumed) == pytest.approx(last_values(reference), abs=1e-6)


def check_resumes(
    tmp_path: Path,
    processes: int,
    augment: bool,
    ends: tuple[str, ...],
    *model: str,
    pairs: int = 60,
) -> None:
    """Against one uninterrupted fit, a fit resumed from each of ``ends``: ``end-of-epoch`` (a
    fit of one epoch, continued to the end) and ``mid-epoch`` (killed right after a checkpoint
    in the middle of epoch 1)."""
    root = tmp_path / "pairs"
    write_pairs(root, pairs)
    extra = ["--data.augment=true"] if augment else []
    extra += model
    reference = tmp_path / "uninterrupted"
    fit(reference, root, processes, *extra)
    for end in ends:
        run = tmp_path / end
        if end == "end-of-epoch":
            fit(run, root, processes, *extra, "--trainer.max_epochs=1")
            checkpoint = "last"
        else:
            checkpoint = str(run / "mid.ckpt")
            killer = {
                "class_path": "interrupt_callbacks.SaveThenKill",
                "init_args": {"epoch": 1, "batch": 1, "path": checkpoint},
            }
            fit(run, root, processes, *extra, f"--trainer.callbacks+={json.dumps(killer)}")
        saved = run / "checkpoints" / "last.ckpt" if end == "end-of-epoch" else Path(checkpoint)
        step = torch.load(saved, weights_only=True)["global_step"]
        fit(run, root, processes, *extra, f"--ckpt_path={checkpoint}")
        assert_same_run(run, reference, step)


ENDS = ("end-of-epoch", "mid-epoch")


#: InfoNCE with a cross-batch memory, full and in use by the mid-epoch checkpoint: the resumed
#: fit's losses match only if the checkpoint gives the memory back.
MEMORY = ("--model.loss=infonce", "--model.memory_size=12", "--model.memory_start=2")


def test_resume_on_one_process(tmp_path: Path) -> None:
    check_resumes(tmp_path, 1, False, ENDS, *MEMORY)


def test_resume_restores_the_random_layers(tmp_path: Path) -> None:
    """EfficientNet-B0 trained whole: its stochastic depth draws from the global generator,
    which the checkpoint holds and the resumed fit puts back."""
    random_layers = ["--model.backbone=efficientnet_b0", "--model.freeze=none"]
    check_resumes(tmp_path, 1, False, ("mid-epoch",), *random_layers, pairs=30)


def test_resume_with_cached_augmented_views(tmp_path: Path) -> None:
    """Fixed views, their frozen features cached: the resumed fit rebuilds the cache and takes
    each epoch's views from (seed, epoch) as the uninterrupted one does."""
    views = ("--data.augment_views=2", "--model.cache_frozen_features=true")
    check_resumes(tmp_path, 1, True, ("end-of-epoch",), *views, pairs=30)


@pytest.mark.slow
def test_resume_with_augmentation_mid_epoch(tmp_path: Path) -> None:
    check_resumes(tmp_path, 1, True, ("mid-epoch",))


@pytest.mark.slow
def test_resume_on_two_processes_with_augmentation(tmp_path: Path) -> None:
    check_resumes(tmp_path, 2, True, ENDS, *MEMORY)


def test_a_resumed_fit_keeps_its_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A resume reuses the run's split.csv (a new group-mate joins its group's split) and
    refuses another seed or other fractions, before anything is overwritten."""
    from lightning_siamese.cli.main import main
    from lightning_siamese.data.splits import read_split

    root, run = tmp_path / "pairs", tmp_path / "run"
    names = write_pairs(root, 40)
    groups = {name: f"g{index // 2}" for index, name in enumerate(names)}
    write_pairs(root, 40, groups=groups)
    args = [*tiny_args(root, run), "--validate_before_fit=false", "--data.seed=1"]
    assert main(["fit", *args, "--trainer.max_epochs=1"]) == 0
    first = (run / "split.csv").read_bytes()
    logs = sorted(run.glob("lightning_logs/*"))

    for option in ("--data.seed=2", "--data.split_fractions=[0.5,0.25,0.25]"):
        resumed = main(["fit", *args, option, "--trainer.max_epochs=2", "--ckpt_path=last"])
        error = capsys.readouterr().err
        assert resumed == 2 and "start a new run" in error, error
        assert "--data." + option.split("=")[0].removeprefix("--data.") in error
        assert (run / "split.csv").read_bytes() == first
        assert sorted(run.glob("lightning_logs/*")) == logs  # refused before anything is written
        assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0

    # The data module refuses it too (as Lightning restores it, without the CLI's check).
    from lightning_siamese.data.datamodule import SiameseDataModule
    from lightning_siamese.errors import ConfigError

    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["SiameseDataModule"] == {
        "seed": 1,
        "augment_views": None,
        "split_fractions": [0.6, 0.2, 0.2],
    }
    other = SiameseDataModule(str(root), seed=2, split_fractions=(0.6, 0.2, 0.2))
    with pytest.raises(ConfigError, match="start a new run"):
        other.check_resume(saved["SiameseDataModule"], "last.ckpt")
    # Other fixed augmented views: resumed, with a warning that the augmentation changes.
    fractions = (0.6, 0.2, 0.2)
    views = SiameseDataModule(
        str(root), seed=1, split_fractions=fractions, augment=True, augment_views=3
    )
    with pytest.warns(UserWarning, match="augment_views 3 is not the None of the run"):
        views.check_resume(saved["SiameseDataModule"], "last.ckpt")

    # A new member of each of three groups: it joins its group's split.
    before = read_split(run / "split.csv")
    extra = write_pairs(root, 3, start=40)
    mates = {name: groups[names[2 * index]] for index, name in enumerate(extra)}
    write_pairs(root, 43, groups={**groups, **mates})
    assert main(["fit", *args, "--trainer.max_epochs=2", "--ckpt_path=last"]) == 0
    after = read_split(run / "split.csv")
    assert {name: after[name] for name in before} == dict(before)
    for name, group in mates.items():
        assert after[name] == before.groups[group]
