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

_GROUP_TRIES = 64


class UnreadableImageWarning(UserWarning):
    """An image that read fine at start failed later; its triplet was skipped."""


def draw_negative(rng: random.Random, anchor: int, groups: Sequence[str]) -> int:
    """An image index (``2 * pair + side``) of another pair, preferably of another group."""
    count = len(groups)
    if count < 2:
        raise ValueError("a split needs at least 2 pairs to draw negatives")
    other = anchor
    for _ in range(_GROUP_TRIES):
        other = rng.randrange(count - 1)
        other += other >= anchor
        if groups[other] != groups[anchor]:
            break
    return 2 * other + rng.randrange(2)


def image_path(pairs: Sequence[Pair], image_index: int) -> Path:
    """The file of image ``image_index`` (``2 * pair + side``) of a split's pairs."""
    pair = pairs[image_index // 2]
    return pair.right if image_index % 2 else pair.left


def draw_negatives(groups: Sequence[str], seed: int | str) -> list[int]:
    """One negative per anchor, fixed by ``seed``."""
    rng = random.Random(str(seed))
    return [draw_negative(rng, anchor, groups) for anchor in range(len(groups))]


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

    Items are dicts: ``anchor``, ``positive``, ``negative`` (image tensors), ``index`` (the pair)
    and ``negative_index`` (the image index of the negative); with ``load_images`` off, only the
    two indices (no file is read).
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        transform: Transform,
        negatives: Sequence[int] | None = None,
    ) -> None:
        self.pairs = list(pairs)
        self.transform = transform
        self.negatives = list(negatives) if negatives is not None else None
        # False: items carry only the indices (the model has the images' features cached).
        self.load_images = True
        self.unreadable: set[str] = set()

    @property
    def groups(self) -> list[str]:
        return [pair.group for pair in self.pairs]

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
            return {"index": index, "negative_index": negative}
        # A file checked at start can go bad later (deleted, truncated, replaced): report it and
        # serve the next triplet whose files still read, instead of ending a long run.
        for step in range(len(self.pairs)):
            candidate = (index + step) % len(self.pairs)
            other = negative if negative // 2 != candidate else (negative + 2) % (2 * len(self))
            try:
                return self._load(candidate, other if step else negative)
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
            "index": index,
            "negative_index": negative,
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
        negatives = [draw_negative(rng, anchor, self.groups) for anchor in range(len(order))]
        return iter([(anchor, negatives[anchor]) for anchor in order])
