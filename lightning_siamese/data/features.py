"""Features computed once per image, served in place of the images: what a data module's loaders
send when the frozen part of the network has run over a split already.

The data side only reads rows: a :class:`FeatureTable` is anything with ``gather(rows)``, such
as the training wing's frozen-feature cache. Images of a split are numbered ``2 * pair + side``
(see :mod:`~lightning_siamese.data.negatives`), and a batch's ``features`` stack its anchors'
rows, then its positives', then its negatives'. A table of fixed augmented views (see
:mod:`~lightning_siamese.data.views`) holds ``K`` rows per image: view ``k`` of image ``i`` at
row ``k * images + i``.
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


def image_keys(batch: dict[str, Any], images: int = 0) -> torch.Tensor:
    """The images of a batch of triplets, as rows of its split: anchors (``2 * pair``), then
    positives (``2 * pair + 1``), then negatives; with the batch's ``views`` (of a split of
    ``images`` images), the rows of those views."""
    index = torch.as_tensor(batch["index"])
    rows = torch.cat([2 * index, 2 * index + 1, torch.as_tensor(batch["negative_index"])])
    views = batch.get("views")
    if views is None:
        return rows
    if images <= 0:
        raise ValueError("a batch of views needs the split's number of images")
    return rows + images * torch.as_tensor(views).T.reshape(-1)


class CollateWithFeatures:
    """A loader's ``collate_fn``: the items (numbers only: no image is read), and ``features``,
    the batch's rows of ``table`` (see the module's docstring; ``images``: the split's images,
    for a table of views)."""

    def __init__(self, table: FeatureTable, images: int = 0) -> None:
        self.table = table
        self.images = images

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = default_collate(items)
        batch["features"] = self.table.gather(image_keys(batch, self.images))
        return batch
