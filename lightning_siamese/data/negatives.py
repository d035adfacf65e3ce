"""Negatives: which images may be a pair's negative, and drawing them.

Images of a split are numbered ``2 * pair + side`` (side 0 = left, 1 = right). A negative is an
image of a *different* pair of the same split, and of a different group where the split has one,
so near-duplicate variants never serve as negatives of each other.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from lightning_siamese.data.pairs import Pair


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
    ``data show``, the Keras example's ``visualize()``."""
    negatives = draw_negatives([pair.group for pair in pairs], f"show:{seed}")
    chosen = random.Random(seed).sample(range(len(pairs)), min(count, len(pairs)))
    return [
        (pairs[index].left, pairs[index].right, image_path(pairs, negatives[index]))
        for index in chosen
    ]
