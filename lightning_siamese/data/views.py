"""A fixed set of augmented views per training image: ``K`` augmentations of each image drawn
from the data seed, and each epoch one of them per image. Pure torch.

With fresh augmentation every epoch, the frozen part of the network must run on every training
image every epoch. Under this policy an image only ever takes one of ``K`` forms, so the frozen
features of all ``K * images`` views can be computed once at ``fit`` start (the frozen-feature
cache) and the epochs train the tail alone, with the same losses as reading the images.

Every number here is a function of ``(seed, image, view)`` or ``(seed, epoch)`` alone: the same
in any process, loader worker or resumed run. Epochs go in cycles of ``K``: within a cycle each
image takes each of its views once, in an order drawn from ``(seed, cycle)``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from lightning_siamese.data.image_files import ImageFilesDataset
from lightning_siamese.data.transforms import Transform
from lightning_siamese.errors import ConfigError


def check_views(views: int | None, augment: bool) -> None:
    """A :class:`~lightning_siamese.errors.ConfigError` for a view count below 1, or views
    without augmentation (they would all be the same image)."""
    if views is None:
        return
    if views < 1:
        raise ConfigError(f"--data.augment_views must be >= 1 (or unset), got {views}")
    if not augment:
        raise ConfigError(
            "--data.augment_views fixes K augmentations of each training image: it needs "
            "--data.augment true"
        )


class AugmentViews:
    """The ``views`` augmented views of each of ``images`` training images.

    Args:
        images: the split's images (rows ``2 * pair + side``).
        views: augmented views per image (``K``).
        seed: the data seed they are drawn from.
    """

    def __init__(self, images: int, views: int, seed: int) -> None:
        self.images = images
        self.views = views
        self.seed = seed
        self._cycle: tuple[int, list[list[int]]] | None = None

    def view_seed(self, image: int, view: int) -> int:
        """The seed of torch's generator for view ``view`` of image ``image``."""
        return random.Random(f"view:{self.seed}:{image}:{view}").getrandbits(63)

    def view_seeds(self) -> list[int]:
        """The seeds of every view, row ``view * images + image`` (the cache's order)."""
        return [self.view_seed(i, k) for k in range(self.views) for i in range(self.images)]

    def epoch_views(self, epoch: int) -> list[int]:
        """The view each image takes in epoch ``epoch``."""
        cycle, place = divmod(epoch, self.views)
        if self._cycle is None or self._cycle[0] != cycle:
            rng = random.Random(f"views:{self.seed}:{cycle}")
            orders = []
            for _ in range(self.images):
                order = list(range(self.views))
                rng.shuffle(order)
                orders.append(order)
            self._cycle = (cycle, orders)
        return [order[place] for order in self._cycle[1]]

    def row(self, image: int, view: int) -> int:
        """The cache row of view ``view`` of image ``image``."""
        return view * self.images + image

    def describe(self) -> str:
        return f"{self.views} augmented views of each of the {self.images:,} training images"


def load_view(transform: Transform, image: Image.Image, seed: int) -> torch.Tensor:
    """``transform(image)`` with torch's generator seeded by ``seed`` alone; the process's
    own random state is put back after."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # the CPU's only: no GPU state is touched
        return transform(image)


class ViewFilesDataset(ImageFilesDataset):
    """Image files, each preprocessed with the random transform seeded by its own seed (the
    rows of a cache of augmented views).

    Args:
        paths: the image file of each row.
        transform: PIL image -> tensor, random.
        seeds: each row's seed (:meth:`AugmentViews.view_seeds`).
    """

    def __init__(self, paths: Sequence[Path], transform: Transform, seeds: Sequence[int]) -> None:
        super().__init__(paths, transform)
        self.seeds = list(seeds)
        if len(self.seeds) != len(self.paths):
            raise ValueError(f"{len(self.paths)} files but {len(self.seeds)} seeds")

    def preprocess(self, image: Image.Image, index: int) -> torch.Tensor:
        return load_view(self.transform, image, self.seeds[index])
