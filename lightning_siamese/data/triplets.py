"""Triplets of a split: anchor = left, positive = its right twin, negative = another image."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from lightning_siamese.data.images import UNREADABLE, load_image
from lightning_siamese.data.negatives import image_path, negative_groups
from lightning_siamese.data.pairs import Pair
from lightning_siamese.data.sampling import TripletKey
from lightning_siamese.data.transforms import Transform
from lightning_siamese.data.views import AugmentViews, load_view


class UnreadableImageWarning(UserWarning):
    """An image that read fine at start failed later; its triplet was skipped."""


class TripletDataset(Dataset):
    """Triplets of one split.

    Indexed by ``i`` (the negative fixed at construction: validation and test), by
    ``(i, negative)``, or by a :class:`TripletKey` (the negative, the augmentation seed and
    under fixed views each image's view, chosen by :class:`TripletSampler`: training).

    Items are dicts: ``anchor``, ``positive``, ``negative`` (image tensors), ``index`` (the pair),
    ``negative_index`` (the image index of the negative), and ``group_id`` and
    ``negative_group_id`` (the anchor's and the negative's group, for in-batch mining to leave
    group-mates out), and with a key's views ``views`` (a tensor of three); from
    :meth:`without_images`, the numbers only (no file is read).

    Args:
        pairs: the split's pairs.
        transform: image -> tensor.
        negatives: each pair's fixed negative (image index); None when a sampler draws them.
        group_mates_as_negatives: let an anchor's group-mates be its negatives (see
            :func:`negative_groups`).
        views: the fixed augmented views of the split's images: a key's views pick each
            image's seed (None: a key's one augmentation seed draws the whole triplet).
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        transform: Transform,
        negatives: Sequence[int] | None = None,
        group_mates_as_negatives: bool = False,
        views: AugmentViews | None = None,
    ) -> None:
        self.pairs = list(pairs)
        self.views = views
        self.transform = transform
        self.negatives = list(negatives) if negatives is not None else None
        #: The groups that rule negatives, one per pair, and their ids (numbers from 0).
        self.groups = negative_groups(self.pairs, group_mates_as_negatives)
        numbers: dict[str, int] = {}
        self.group_ids = [numbers.setdefault(group, len(numbers)) for group in self.groups]
        self.load_images = True
        self.unreadable: set[str] = set()

    def without_images(self) -> TripletDataset:
        """The same triplets whose items carry the numbers only: for a loader that serves
        features computed from the images before (:mod:`~lightning_siamese.data.features`)."""
        numbers = copy.copy(self)
        numbers.load_images = False
        return numbers

    def image_files(self) -> list[Path]:
        """Every image of the split, row ``2 * pair + side``."""
        return [self.image_path(index) for index in range(2 * len(self.pairs))]

    def image_path(self, image_index: int) -> Path:
        return image_path(self.pairs, image_index)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: int | tuple[int, int] | TripletKey) -> dict[str, Any]:
        seed, views = None, None
        if isinstance(key, tuple):  # (i, negative) or a TripletKey
            index, negative = key[0], key[1]
            if isinstance(key, TripletKey):
                seed, views = key.augment_seed, key.views
        else:
            if self.negatives is None:
                raise TypeError("this dataset draws negatives in its sampler: index it by (i, j)")
            index, negative = key, self.negatives[key]
        if not self.load_images:
            return self._numbers(index, negative, views)
        # A file checked at start can go bad later (deleted, truncated, replaced): report it and
        # serve the next triplet whose files still read, instead of ending a long run (under
        # fixed views, with the key's view numbers: a cached fit never reads files anyway).
        for step in range(len(self.pairs)):
            candidate = (index + step) % len(self.pairs)
            try:
                return self.load_triplet(
                    candidate, self._negative_for(candidate, negative, step), seed, views=views
                )
            except UNREADABLE as error:
                self._report_unreadable(error)
        raise RuntimeError("no triplet of this split can be read any more: every file failed")

    def load_triplet(
        self,
        index: int,
        negative: int,
        seed: int | None = None,
        read: Callable[[Path], Image.Image] | None = None,
        views: tuple[int, int, int] | None = None,
    ) -> dict[str, Any]:
        """The triplet's tensors; with ``seed``, the random transforms draw from torch's
        generator seeded by it alone (the same in any process, worker or resumed run), and the
        process's own random state is put back after. (torchvision's transforms draw from
        torch's generator; a custom transform that uses ``random`` or NumPy is not seeded.)
        With ``views`` (and :attr:`views`), each image is instead its own view's seeded
        transform (:func:`~lightning_siamese.data.views.load_view`). ``read`` opens a file
        (default :func:`~lightning_siamese.data.images.load_image`)."""
        rows = (2 * index, 2 * index + 1, negative)
        read = read or load_image
        images = []
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:  # the CPU generator only: fork_rng puts back the CPU's
                torch.default_generator.manual_seed(seed)
            for place, row in enumerate(rows):
                path = self.image_path(row)
                try:
                    image = read(path)
                    if views is not None and self.views is not None:
                        seeded = self.views.view_seed(row, views[place])
                        images.append(load_view(self.transform, image, seeded))
                    else:
                        images.append(self.transform(image))
                except UNREADABLE as error:
                    raise OSError(f"{path}: {error}") from error
        return {
            "anchor": images[0],
            "positive": images[1],
            "negative": images[2],
            **self._numbers(index, negative, views),
        }

    def _negative_for(self, anchor: int, negative: int, step: int) -> int:
        """``negative``, or for a replacement anchor (``step`` > 0) the first image from there
        on that is of another group than the anchor's (of another pair when none is)."""
        if step == 0:
            return negative
        count = 2 * len(self.pairs)
        images = [(negative + offset) % count for offset in range(count)]
        other_group = [j for j in images if self.groups[j // 2] != self.groups[anchor]]
        return next(iter(other_group), next(j for j in images if j // 2 != anchor))

    def _numbers(
        self, index: int, negative: int, views: tuple[int, int, int] | None = None
    ) -> dict[str, Any]:
        numbers: dict[str, Any] = {
            "index": index,
            "negative_index": negative,
            "group_id": self.group_ids[index],
            "negative_group_id": self.group_ids[negative // 2],
        }
        if views is not None:
            numbers["views"] = torch.tensor(views)
        return numbers

    def _report_unreadable(self, error: BaseException) -> None:
        message = str(error)
        if message not in self.unreadable:  # once per file (per loader process)
            self.unreadable.add(message)
            warnings.warn(
                f"{message}: this image became unreadable after the start check; its "
                "triplet is skipped (the next readable one is used). Fix or remove the file; "
                "`lightning-siamese data check` lists every problem",
                UnreadableImageWarning,
                stacklevel=2,
            )
