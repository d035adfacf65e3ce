"""Features computed once per image, served in place of the images: what a data module's loaders
send when the frozen part of the network has run over a split already.

The data side only reads rows: a :class:`FeatureTable` is anything with ``gather(rows)``, such
as the training wing's frozen-feature cache. Images of a split are numbered ``2 * pair + side``
(see :mod:`~lightning_siamese.data.negatives`), and a batch's ``features`` stack its anchors'
rows, then its positives', then its negatives'.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch.utils.data import default_collate


class FeatureTable(Protocol):
    """Precomputed features, one row per image of a split."""

    def gather(self, rows: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """The rows ``rows``, stacked (on the CPU)."""
        ...


def image_keys(batch: dict[str, Any]) -> torch.Tensor:
    """The images of a batch of triplets, as rows of its split: anchors (``2 * pair``), then
    positives (``2 * pair + 1``), then negatives."""
    index = torch.as_tensor(batch["index"])
    return torch.cat([2 * index, 2 * index + 1, torch.as_tensor(batch["negative_index"])])


class CollateWithFeatures:
    """A loader's ``collate_fn``: the items (numbers only: no image is read), and ``features``,
    the batch's rows of ``table`` (see the module's docstring)."""

    def __init__(self, table: FeatureTable) -> None:
        self.table = table

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = default_collate(items)
        batch["features"] = self.table.gather(image_keys(batch))
        return batch
