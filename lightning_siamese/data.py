"""The LightningDataModule: a ``left/`` + ``right/`` folder -> train/val/test triplet loaders."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader

from lightning_siamese.pairs import PairReport, discover_pairs, require_pairs
from lightning_siamese.splits import (
    SPLIT_FILE,
    SPLITS,
    assign_splits,
    check_fractions,
    read_split,
    write_split,
)
from lightning_siamese.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    eval_transform,
    train_transform,
)
from lightning_siamese.triplets import TripletDataset, TripletSampler, draw_negatives

log = logging.getLogger(__name__)


class SiameseDataModule(pl.LightningDataModule):
    """Triplets from a folder of look-alike pairs, split by pair (or group) into train/val/test.

    Args:
        root: folder with ``left/`` and ``right/`` (and optionally ``pairs.csv`` with ``name`` and
            ``group`` columns: a group stays in one split).
        image_size: side of the square the images are resized to (the seed used 200).
        batch_size: triplets per batch (per device).
        num_workers: DataLoader worker processes.
        split_fractions: expected (train, val, test) shares of the groups.
        seed: fixes the split, the validation/test negatives and the training negatives of each
            epoch (independent of the training seed, so changing that never moves the split).
        strict: fail on any problem in the folder instead of skipping the bad files.
        check_images: decode every image once at setup, so bad files are reported up front.
        augment: random crop, flip and colour jitter on training images (the seed had none).
        mean: per-channel normalisation mean (ImageNet's by default).
        std: per-channel normalisation standard deviation.
        split_file: a ``split.csv`` from an earlier run: the pairs listed keep their split.
        build_if_missing: build this demo data set into ``root`` if ``root/left`` is missing.
    """

    def __init__(
        self,
        root: str,
        image_size: int = 200,
        batch_size: int = 64,
        num_workers: int = 2,
        split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
        seed: int = 0,
        strict: bool = False,
        check_images: bool = True,
        augment: bool = False,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        split_file: str | None = None,
        build_if_missing: Literal["emoji", "glyphs"] | None = None,
    ) -> None:
        super().__init__()
        check_fractions(split_fractions)
        if image_size < 1 or batch_size < 1 or num_workers < 0:
            raise ValueError(
                "image_size and batch_size must be >= 1 and num_workers >= 0; got "
                f"{image_size}, {batch_size}, {num_workers}"
            )
        self.save_hyperparameters()
        self.root = Path(root)
        self.report: PairReport | None = None
        self.splits: dict[str, list] = {}
        self.datasets: dict[str, TripletDataset] = {}

    def prepare_data(self) -> None:
        kind = self.hparams.build_if_missing
        if kind is None or (self.root / "left").is_dir():
            return
        rank_zero_info(f"{self.root}/left is missing: building the {kind} demo data set there")
        if kind == "emoji":
            from lightning_siamese.emoji import build_emoji

            build_emoji(self.root)
        else:
            from lightning_siamese.glyphs import build_glyphs

            build_glyphs(self.root)

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self._discover_and_split()
        needed = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(
            stage or "fit", ()
        )
        for split in needed:
            self._require_split(split, stage)
        if stage == "fit" and len(self.datasets["train"]) < self.hparams.batch_size:
            raise ValueError(
                f"batch_size ({self.hparams.batch_size}) is larger than the train split "
                f"({len(self.datasets['train'])} pairs): lower --data.batch_size"
            )

    def _discover_and_split(self) -> None:
        hp = self.hparams
        self.report = discover_pairs(self.root, check_images=hp.check_images)
        pairs = require_pairs(self.report, strict=hp.strict)
        if self.report.problems:
            rank_zero_warn(
                f"{self.report.skipped_files} files skipped: {len(self.report.problems)} problems "
                f"in {self.root}; these pairs are not used:\n{self.report.format(limit=10)}"
            )
        fixed = read_split(Path(hp.split_file)) if hp.split_file else None
        self.splits = assign_splits(pairs, hp.split_fractions, hp.seed, fixed)
        evaluation = eval_transform(hp.image_size, hp.mean, hp.std)
        training = train_transform(hp.image_size, hp.mean, hp.std, hp.augment)
        for split, split_pairs in self.splits.items():
            groups = [pair.group for pair in split_pairs]
            if split == "train":
                self.datasets[split] = TripletDataset(split_pairs, training)
            else:
                negatives = draw_negatives(groups, f"{split}:{hp.seed}") if len(groups) > 1 else []
                self.datasets[split] = TripletDataset(split_pairs, evaluation, negatives)
        sizes = ", ".join(f"{split} {len(self.splits[split])}" for split in SPLITS)
        rank_zero_info(f"{self.report.summary()}\nsplit (seed {hp.seed}): {sizes} pairs")
        self._write_split()

    def _write_split(self) -> None:
        trainer = self.trainer
        if trainer is None or not trainer.is_global_zero or trainer.log_dir is None:
            return
        path = Path(trainer.log_dir) / SPLIT_FILE
        write_split(path, self.splits)
        rank_zero_info(f"split written to {path}")

    def _require_split(self, split: str, stage: str | None) -> None:
        count = len(self.splits[split])
        if count < 2:
            raise ValueError(
                f"the {split} split has {count} pair(s) but '{stage}' needs at least 2: add pairs "
                f"or raise its share in --data.split_fractions (now {self.hparams.split_fractions})"
            )

    def train_dataloader(self) -> DataLoader:
        dataset = self.datasets["train"]
        sampler = TripletSampler(dataset.groups, seed=self.hparams.seed)
        # drop_last: a last batch of one triplet would break the head's BatchNorm.
        return self._loader(dataset, sampler=sampler, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.datasets["val"])

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.datasets["test"])

    def _loader(self, dataset: TripletDataset, **kwargs) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
            **kwargs,
        )
