"""Triplets from pairs: anchor = left, positive = its right twin, negative = another pair's image.

Images of a split are numbered ``2 * pair + side`` (side 0 = left, 1 = right). A negative is an
image of a *different* pair of the same split, and of a different group where the split has one,
so near-duplicate variants never serve as negatives of each other.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset, Sampler

from lightning_siamese.images import load_image
from lightning_siamese.pairs import Pair
from lightning_siamese.transforms import Transform


class UnreadableImageWarning(UserWarning):
    """An image that read fine at start failed later; its triplet was skipped."""


def draw_negative(
    rng: random.Random, anchor: int, groups: Sequence[str], other_groups: bool | None = None
) -> int:
    """An image index (``2 * pair + side``) of another pair, uniformly, and of another group
    when the split has more than one group (``other_groups``: whether it has, when the caller
    knows; None works it out)."""
    count = len(groups)
    if count < 2:
        raise ValueError("a split needs at least 2 pairs to draw negatives")
    if other_groups is None:
        other_groups = len(set(groups)) > 1
    while True:
        other = rng.randrange(count - 1)
        other += other >= anchor
        if not other_groups or groups[other] != groups[anchor]:
            return 2 * other + rng.randrange(2)


def negative_groups(pairs: Sequence[Pair], group_mates_as_negatives: bool = False) -> list[str]:
    """The groups that rule which images may be a pair's negative: each pair's ``group``, so a
    negative never comes from the anchor's group (its variants look alike on purpose), or with
    ``group_mates_as_negatives`` (or in a split of one group) each pair's own name, so only the
    anchor's own twin is left out."""
    if group_mates_as_negatives or len({pair.group for pair in pairs}) == 1:
        return [pair.name for pair in pairs]  # a split of one group: another pair will do
    return [pair.group for pair in pairs]


def image_path(pairs: Sequence[Pair], image_index: int) -> Path:
    """The file of image ``image_index`` (``2 * pair + side``) of a split's pairs."""
    pair = pairs[image_index // 2]
    return pair.right if image_index % 2 else pair.left


def draw_negatives(groups: Sequence[str], seed: int | str) -> list[int]:
    """One negative per anchor, fixed by ``seed`` (see :func:`draw_negative`)."""
    rng = random.Random(str(seed))
    other_groups = len(set(groups)) > 1
    return [draw_negative(rng, anchor, groups, other_groups) for anchor in range(len(groups))]


def example_triplets(
    pairs: Sequence[Pair], count: int = 4, seed: int = 0
) -> list[tuple[Path, Path, Path]]:
    """``count`` (anchor, positive, negative) files drawn by ``seed``: the pictures of
    ``data show``, the seed's ``visualize()``."""
    negatives = draw_negatives([pair.group for pair in pairs], f"show:{seed}")
    chosen = random.Random(seed).sample(range(len(pairs)), min(count, len(pairs)))
    return [
        (pairs[index].left, pairs[index].right, image_path(pairs, negatives[index]))
        for index in chosen
    ]


class TripletDataset(Dataset):
    """Triplets of one split.

    Indexed by ``i`` (the negative fixed at construction: validation and test) or by
    ``(i, negative)`` (the negative chosen by :class:`TripletSampler`: training).

    Items are dicts: ``anchor``, ``positive``, ``negative`` (image tensors), ``index`` (the pair),
    ``negative_index`` (the image index of the negative), and ``group`` and ``negative_group``
    (numbers of the anchor's and the negative's group, for in-batch mining to leave group-mates
    out); with ``load_images`` off, the numbers only (no file is read).

    Args:
        pairs: the split's pairs.
        transform: image -> tensor.
        negatives: each pair's fixed negative (image index); None when a sampler draws them.
        group_mates_as_negatives: let an anchor's group-mates be its negatives (see
            :func:`negative_groups`).
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        transform: Transform,
        negatives: Sequence[int] | None = None,
        group_mates_as_negatives: bool = False,
    ) -> None:
        self.pairs = list(pairs)
        self.transform = transform
        self.negatives = list(negatives) if negatives is not None else None
        #: The groups that rule negatives, one per pair, and their numbers.
        self.groups = negative_groups(self.pairs, group_mates_as_negatives)
        numbers: dict[str, int] = {}
        self.group_numbers = [numbers.setdefault(group, len(numbers)) for group in self.groups]
        # False: items carry only the indices (the model has the images' features cached).
        self.load_images = True
        self.unreadable: set[str] = set()

    def image_path(self, image_index: int) -> Path:
        return image_path(self.pairs, image_index)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        if isinstance(key, tuple):
            index, negative = key
        else:
            if self.negatives is None:
                raise TypeError("this dataset draws negatives in its sampler: index it by (i, j)")
            index, negative = key, self.negatives[key]
        if not self.load_images:
            return self._numbers(index, negative)
        # A file checked at start can go bad later (deleted, truncated, replaced): report it and
        # serve the next triplet whose files still read, instead of ending a long run.
        for step in range(len(self.pairs)):
            candidate = (index + step) % len(self.pairs)
            try:
                return self._load(candidate, self._negative_for(candidate, negative, step))
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
                self._report_unreadable(error)
        raise RuntimeError("no triplet of this split can be read any more: every file failed")

    def _load(self, index: int, negative: int) -> dict[str, Any]:
        pair = self.pairs[index]
        images = []
        for path in (pair.left, pair.right, self.image_path(negative)):
            try:
                images.append(self.transform(load_image(path)))
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
                raise OSError(f"{path}: {error}") from error
        return {
            "anchor": images[0],
            "positive": images[1],
            "negative": images[2],
            **self._numbers(index, negative),
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

    def _numbers(self, index: int, negative: int) -> dict[str, int]:
        return {
            "index": index,
            "negative_index": negative,
            "group": self.group_numbers[index],
            "negative_group": self.group_numbers[negative // 2],
        }

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


class TripletSampler(Sampler[tuple[int, int]]):
    """Yields ``(anchor, negative)`` with negatives redrawn every epoch.

    The epoch comes from :meth:`set_epoch` (Lightning calls it on a single device), or else from
    a count of passes, so negatives change between epochs under a distributed wrapper too; both
    give the same draws on every rank.
    """

    def __init__(self, groups: Sequence[str], seed: int = 0, shuffle: bool = True) -> None:
        self.groups = list(groups)
        self.seed = seed
        self.shuffle = shuffle
        self._epoch: int | None = None
        self._passes = 0

    def set_epoch(self, epoch: int) -> None:
        self._epoch = epoch

    def __len__(self) -> int:
        return len(self.groups)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self._epoch if self._epoch is not None else self._passes
        self._passes += 1
        rng = random.Random(f"train:{self.seed}:{epoch}")
        order = list(range(len(self.groups)))
        if self.shuffle:
            rng.shuffle(order)
        other_groups = len(set(self.groups)) > 1
        negatives = [
            draw_negative(rng, anchor, self.groups, other_groups) for anchor in range(len(order))
        ]
        return iter([(anchor, negatives[anchor]) for anchor in order])
