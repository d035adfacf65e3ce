"""The DataModule: honest splits, loaders of the right shape, the split file, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from conftest import write_pairs
from lightning_siamese.data.datamodule import SiameseDataModule
from lightning_siamese.data.splits import read_split
from lightning_siamese.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from lightning_siamese.errors import PairDataError


def make(root: Path, **kwargs) -> SiameseDataModule:
    options = {
        "image_size": 16,
        "batch_size": 4,
        "num_workers": 0,
        "split_fractions": (0.6, 0.2, 0.2),
    }
    return SiameseDataModule(str(root), **{**options, **kwargs})


def test_splits_are_disjoint_and_negatives_stay_in_their_split(pair_folder: Path) -> None:
    datamodule = make(pair_folder)
    datamodule.setup("fit")
    datamodule.setup("test")
    names = {split: {p.name for p in pairs} for split, pairs in datamodule.splits.items()}
    assert sum(len(v) for v in names.values()) == 40
    assert names["train"].isdisjoint(names["val"] | names["test"])
    for split in ("val", "test"):
        dataset = datamodule.datasets[split]
        own_files = {p.left for p in dataset.pairs} | {p.right for p in dataset.pairs}
        for index in range(len(dataset)):
            negative = dataset.negatives[index]
            assert negative // 2 != index
            assert dataset.image_path(negative) in own_files


def test_loaders_yield_normalised_batches(pair_folder: Path) -> None:
    datamodule = make(pair_folder)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["anchor"].shape == (4, 3, 16, 16)
    assert batch["index"].shape == (4,)
    low = min((0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True))
    assert batch["anchor"].min() >= low - 1e-4 and batch["anchor"].min() < 0  # normalised
    train_batches = list(datamodule.train_dataloader())
    assert all(len(b["index"]) == 4 for b in train_batches)  # drop_last
    assert len(train_batches) == len(datamodule.datasets["train"]) // 4
    val = torch.cat([b["index"] for b in datamodule.val_dataloader()])
    assert val.tolist() == list(range(len(datamodule.datasets["val"])))


def test_training_negatives_change_between_epochs(pair_folder: Path) -> None:
    datamodule = make(pair_folder)
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    epochs = []
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)
        pairs = {}
        for batch in loader:
            pairs.update(
                zip(batch["index"].tolist(), batch["negative_index"].tolist(), strict=True)
            )
        epochs.append(pairs)
    shared = epochs[0].keys() & epochs[1].keys()
    assert any(epochs[0][key] != epochs[1][key] for key in shared)


def test_split_file_is_written_to_the_run_and_can_be_reused(
    pair_folder: Path, tmp_path: Path
) -> None:
    datamodule = make(pair_folder)
    datamodule.trainer = pl.Trainer(default_root_dir=tmp_path / "run", logger=False)
    datamodule.setup("fit")
    split_file = tmp_path / "run" / "split.csv"
    # Written as training starts (after a resumed fit has taken its run's split back).
    assert not split_file.exists()
    datamodule.train_dataloader()
    written = read_split(split_file)
    assert len(written) == 40
    assert {n for n, s in written.items() if s == "test"} == {
        p.name for p in datamodule.splits["test"]
    }
    write_pairs(pair_folder, 10, start=100)  # the folder grows; a reused split file still rules
    again = make(pair_folder, split_file=str(split_file), seed=7)
    again.setup("test")
    assert {p.name for p in datamodule.splits["test"]} <= {p.name for p in again.splits["test"]}


def test_bad_files_are_skipped_or_fatal_in_strict_mode(pair_folder: Path) -> None:
    (pair_folder / "left" / "broken.jpg").write_bytes(b"\xff\xd8garbage")
    (pair_folder / "right" / "broken.png").write_bytes(b"")
    with pytest.warns(UserWarning, match="2 files skipped"):
        make(pair_folder).setup("fit")
    with pytest.raises(PairDataError, match=r"broken\.jpg"):
        make(pair_folder, strict=True).setup("fit")


def test_clear_errors_for_impossible_settings(pair_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="larger than the train split"):
        make(pair_folder, batch_size=500).setup("fit")
    with pytest.raises(ValueError, match="sum to 1"):
        make(pair_folder, split_fractions=(0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match=r"test split has 0 pair\(s\) but test needs"):
        make(pair_folder, split_fractions=(0.8, 0.2, 0.0)).setup("test")
    three = tmp_path / "three"
    write_pairs(three, 3)
    with pytest.raises(
        ValueError, match=r"val split has [01] pair\(s\) but validation during fit needs"
    ):
        make(three, batch_size=2).setup("fit")
    with pytest.raises(PairDataError, match="does not exist"):
        make(tmp_path / "nowhere")  # at construction, before any model is built
    (tmp_path / "empty").mkdir()
    with pytest.raises(PairDataError, match="has no left/ or right/"):
        make(tmp_path / "empty")


def test_builds_the_demo_set_when_missing(tmp_path: Path) -> None:
    datamodule = make(tmp_path / "glyphs", build_if_missing="glyphs")
    datamodule.prepare_data()
    datamodule.setup("fit")
    assert len(datamodule.report.pairs) == 496
    assert len({p.group for p in datamodule.report.pairs}) == 62
