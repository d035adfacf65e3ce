"""The LightningDataModule: a ``left/`` + ``right/`` folder -> train/val/test triplet loaders."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from lightning_siamese.data.features import CollateWithFeatures, FeatureTable
from lightning_siamese.data.image_files import folder_dataset
from lightning_siamese.data.pairs import (
    Pair,
    PairReport,
    discover_pairs,
    require_pairs,
)
from lightning_siamese.data.run_split import (
    agreed_image_size,
    build_demo_data,
    check_resume,
    check_root,
    check_settings,
    require_stage,
    split_pairs,
    triplet_datasets,
    write_run_split,
)
from lightning_siamese.data.sampling import ResumableLoader, TripletSampler, epoch_place
from lightning_siamese.data.splits import (
    SPLIT_FILE,
    SPLITS,
)
from lightning_siamese.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Transform,
    eval_transform,
    train_transform,
)
from lightning_siamese.data.triplets import TripletDataset
from lightning_siamese.data.views import check_views
from lightning_siamese.data.workers import worker_context
from lightning_siamese.errors import ConfigError


class SiameseDataModule(pl.LightningDataModule):
    """Triplets from a folder of look-alike pairs, split by pair (or group) into train/val/test.

    Args:
        root: folder with ``left/`` and ``right/`` (and optionally ``pairs.csv`` with ``name`` and
            ``group`` columns: a group stays in one split).
        image_size: side of the square the images are resized to; default (unset): the size
            of the model the trainer fits, which takes it from ``model.backbone`` when unset.
        batch_size: triplets per batch (per device).
        num_workers: DataLoader worker processes.
        split_fractions: expected (train, val, test) shares of the groups.
        seed: fixes the split, the validation/test negatives and the training negatives of each
            epoch (independent of the training seed, so changing that never moves the split).
        strict: fail on any problem in the folder instead of skipping the bad files.
        check_images: decode every image once at setup, so bad files are reported up front.
        augment: random crop, flip and colour jitter on training images (the Keras example had
            none).
        augment_views: draw ``K`` augmentations of each training image from ``seed`` and let
            each epoch take one of them per image (:mod:`~lightning_siamese.data.views`), so the
            frozen-feature cache can hold them all; unset: a fresh augmentation every epoch.
        group_mates_as_negatives: let pairs of the anchor's own group (``pairs.csv``: variants
            that look alike on purpose) be its negatives, drawn and mined; by default a negative
            always comes from another group when the split has one.
        mean: per-channel normalisation mean (ImageNet's by default).
        std: per-channel normalisation standard deviation.
        split_file: a ``split.csv`` from an earlier run: the pairs listed keep their split.
            Without one, ``validate`` and ``test`` reuse the ``split.csv`` of the run folder
            (the trainer's ``default_root_dir``) when there is one; ``fit`` writes it.
        build_if_missing: build this demo data set into ``root`` if ``root/left`` is missing.
        predict_root: folder of images to embed with ``predict`` (searched recursively).
    """

    def __init__(
        self,
        root: str,
        image_size: int | None = None,
        batch_size: int = 64,
        num_workers: int = 2,
        split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
        seed: int = 0,
        strict: bool = False,
        check_images: bool = True,
        augment: bool = False,
        augment_views: int | None = None,
        group_mates_as_negatives: bool = False,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        split_file: str | None = None,
        build_if_missing: Literal["emoji", "glyphs"] | None = None,
        predict_root: str | None = None,
    ) -> None:
        super().__init__()
        check_settings(split_fractions, image_size, batch_size, num_workers)
        check_views(augment_views, augment)
        check_root(root, build_if_missing, predict_root)
        self.save_hyperparameters()
        self.root = Path(root)
        #: The side of the images, set at setup: ``image_size``, or the model's.
        self.image_size = image_size
        self.report: PairReport | None = None
        self.splits: dict[str, list[Pair]] = {}
        self.datasets: dict[str, TripletDataset] = {}
        self._split_from_run_file = False
        self._split_unwritten = False
        #: Rows of the split file whose pairs are missing now, kept in the run's split.csv.
        self._absent: dict[str, tuple[str, str]] = {}
        #: Per split, features served in place of its images (:meth:`serve_features`), with
        #: the dataset they were computed for.
        self._features: dict[str, tuple[TripletDataset, FeatureTable]] = {}
        self._dataset_size: int | None = None

    def prepare_data(self) -> None:
        kind = self.hparams["build_if_missing"]
        if kind is None or (self.root / "left").is_dir():
            return
        rank_zero_info(f"{self.root}/left is missing: building the {kind} demo data set there")
        build_demo_data(kind, self.root)

    def setup(self, stage: str | None = None) -> None:
        self.image_size = self._image_size()
        if stage == "predict":
            if self.hparams["predict_root"] is None:
                raise ConfigError("predict needs --data.predict_root: a folder of images to embed")
            transform = eval_transform(self.image_size, self.hparams["mean"], self.hparams["std"])
            root = self.hparams["predict_root"]
            self.predict_dataset = folder_dataset(root, "--data.predict_root", transform)
            for path, reason in self.predict_dataset.skipped:
                rank_zero_warn(f"{path}: {reason}; it is not embedded")
            return
        # A validation before `fit` may have reused an older split file of the run folder;
        # `fit` splits afresh (from `split_file` if given), unless it resumes (load_state_dict),
        # and writes the run's split when it starts training.
        if not self.splits or (stage == "fit" and self._split_from_run_file):
            self._discover_and_split(stage)
        elif self.image_size != self._dataset_size:  # reused with a model of another size
            self._make_datasets()
        self._split_unwritten = stage == "fit"
        hp = self.hparams
        require_stage(self.splits, stage, hp["split_fractions"], hp["batch_size"])

    def _image_size(self) -> int:
        """``image_size``, or the size of the model the trainer fits (the model decides it:
        :func:`~lightning_siamese.models.backbones.resolve_image_size`); a different size set
        on each is refused."""
        model = self.trainer.lightning_module if self.trainer is not None else None
        return agreed_image_size(
            self.hparams["image_size"], getattr(model, "hparams", {}).get("image_size")
        )

    def _run_split_file(self) -> Path | None:
        trainer = self.trainer
        if trainer is None or trainer.default_root_dir is None:
            return None
        return Path(trainer.default_root_dir) / SPLIT_FILE

    def _discover_and_split(self, stage: str | None, resume: bool = False) -> None:
        hp = self.hparams
        if self.report is None or not resume:
            self.report = discover_pairs(self.root, check_images=hp["check_images"])
            if self.report.problems:
                rank_zero_warn(
                    f"{self.report.skipped_files} files skipped: {len(self.report.problems)} "
                    f"problems in {self.root}; these pairs are not used:\n"
                    f"{self.report.format(limit=10)}"
                )
        split_file = Path(hp["split_file"]) if hp["split_file"] else None
        run_split = self._run_split_file()
        self._split_from_run_file = False
        if split_file is None and (stage != "fit" or resume) and run_split and run_split.is_file():
            split_file = run_split
            self._split_from_run_file = not resume  # a resumed fit's own split
        if split_file:
            rank_zero_info(f"using the split of {split_file}")
        pairs = require_pairs(self.report, strict=hp["strict"])
        self.splits, self._absent = split_pairs(
            pairs, hp["split_fractions"], hp["seed"], split_file
        )
        self._make_datasets()
        sizes = ", ".join(f"{split} {len(self.splits[split])}" for split in SPLITS)
        rank_zero_info(f"{self.report.summary()}\nsplit (seed {hp['seed']}): {sizes} pairs")

    def _make_datasets(self) -> None:
        hp, size = self.hparams, self._image_size()
        self.datasets = triplet_datasets(
            self.splits,
            eval_transform(size, hp["mean"], hp["std"]),
            train_transform(size, hp["mean"], hp["std"], hp["augment"]),
            hp["seed"],
            hp["group_mates_as_negatives"],
            hp["augment_views"],
        )
        self._dataset_size = size

    def state_dict(self) -> dict[str, Any]:
        """What made the split, saved with every checkpoint: a resumed fit keeps it."""
        hp = self.hparams
        return {k: hp[k] for k in ("seed", "augment_views")} | {
            "split_fractions": list(hp["split_fractions"])
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """A resumed fit: refuse another seed or other fractions than the run's, and take the
        run's ``split.csv`` (new pairs join their group's split, or go by their hash)."""
        trainer = self.trainer
        if trainer is None or trainer.state.fn != "fit":
            return
        self.check_resume(state_dict, trainer.ckpt_path)
        self._discover_and_split("fit", resume=True)

    def check_resume(self, state: dict[str, Any], checkpoint: Any) -> None:
        """Raise a :class:`~lightning_siamese.errors.ConfigError` when the run ``checkpoint``
        comes from (its :meth:`state_dict`, or data hyper-parameters) was split with another
        seed or other fractions than this data module's."""
        check_resume(self.state_dict(), state, checkpoint)

    def cacheable_images(self, split: str) -> tuple[list[Path], Transform, list[int] | None] | None:
        """A frozen-feature cache's rows for ``split``: its files (row ``2 * pair + side``),
        the loaders' transform and None; under ``augment_views``, training's every view (row
        ``view * images + image``) and their seeds; None where a row could differ each time."""
        dataset = self.datasets.get(split)
        if dataset is None:
            return None
        if split != "train" or not self.hparams["augment"]:
            return dataset.image_files(), dataset.transform, None
        views = dataset.views
        if views is None:
            return None
        return dataset.image_files() * views.views, dataset.transform, views.view_seeds()

    def serve_features(self, features: dict[str, FeatureTable]) -> None:
        """From now on the loaders of these splits read no image: their batches carry the rows
        of ``features[split]`` as ``features`` (see :mod:`~lightning_siamese.data.features`);
        ``serve_features({})`` goes back to images. Features serve only the datasets they were
        computed from: a split set up anew (a resume that restores after fit start) reads its
        images again."""
        self._features = {split: (self.datasets[split], table) for split, table in features.items()}

    def train_dataloader(self) -> DataLoader[dict[str, Any]]:
        dataset = self.datasets["train"]
        trainer = self.trainer
        path = self._run_split_file()
        if self._split_unwritten and path and trainer is not None and trainer.is_global_zero:
            write_run_split(path, self.splits, self._absent)
            rank_zero_info(f"split written to {path}")
        self._split_unwritten = False
        sampler = TripletSampler(
            dataset.groups,
            seed=self.hparams["seed"],
            num_replicas=trainer.world_size if trainer is not None else 1,
            rank=trainer.global_rank if trainer is not None else 0,
            views=dataset.views,
        )
        batches = len(sampler) // self.hparams["batch_size"]
        # drop_last: a last batch of one triplet would break the head's BatchNorm.
        return self._loader(
            "train",
            ResumableLoader,
            sampler=sampler,
            drop_last=True,
            progress=lambda: epoch_place(self.trainer, batches),
        )

    def val_dataloader(self) -> DataLoader[dict[str, Any]]:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader[dict[str, Any]]:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader[dict[str, Any]]:
        trainer = self.trainer
        if trainer is None or trainer.world_size == 1:
            return self._loader("predict")
        # Every process gets as many images (the shortest shards repeat an image, dropped when
        # the predictions are gathered), at least one even with fewer images than processes:
        # Lightning's own predict sampler leaves such a process with none and fails.
        shards: DistributedSampler[int] = DistributedSampler(
            self.predict_dataset, trainer.world_size, trainer.global_rank, shuffle=False
        )
        return self._loader("predict", sampler=shards)

    def _loader(
        self,
        split: str,
        kind: type[DataLoader[dict[str, Any]]] = DataLoader,
        **kwargs: Any,
    ) -> DataLoader[dict[str, Any]]:
        dataset: Dataset[dict[str, Any]]
        workers = self.hparams["num_workers"]
        if split == "predict":
            dataset = self.predict_dataset
        elif self._features.get(split, (None,))[0] is self.datasets[split]:
            # Numbers only, and the rows gathered in this process.
            dataset, workers = self.datasets[split].without_images(), 0
            images = 2 * len(self.datasets[split])  # (a table of views: K rows per image)
            kwargs["collate_fn"] = CollateWithFeatures(self._features[split][1], images)
        else:
            dataset = self.datasets[split]
        kwargs.setdefault("multiprocessing_context", worker_context(workers))
        return kind(
            dataset,
            batch_size=self.hparams["batch_size"],
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
            # Its own generator: starting a pass (workers' seeds) never draws from the global
            # random state that the model's random layers use, so a resumed fit matches.
            generator=torch.Generator().manual_seed(self.hparams["seed"]),
            **kwargs,
        )
