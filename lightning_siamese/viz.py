"""Plots as pure functions: images or tensors in, a matplotlib ``Figure`` out (no pyplot state)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

ImageLike = Image.Image | torch.Tensor | np.ndarray


def to_display(image: ImageLike) -> np.ndarray:
    """HxWx3 (or HxW) array for ``imshow``: PIL images, HWC arrays, or CHW tensors in [0, 1]."""
    if isinstance(image, Image.Image):
        return np.asarray(image)
    if isinstance(image, torch.Tensor):
        array = image.detach().cpu().float()
        if array.ndim == 3 and array.shape[0] in (1, 3):
            array = array.permute(1, 2, 0)
        return array.squeeze(-1).clamp(0, 1).numpy()
    return np.asarray(image)


def plot_triplets(
    triplets: Sequence[tuple[ImageLike, ImageLike, ImageLike]],
    captions: Sequence[tuple[str, str, str]] | None = None,
    cell_inches: float = 2.0,
) -> Figure:
    """A grid with one (anchor, positive, negative) triplet per row: the seed's ``visualize()``.

    Args:
        triplets: rows of three images.
        captions: optional rows of three short texts (e.g. file names) under the column titles.
    """
    rows = len(triplets)
    if rows == 0:
        raise ValueError("no triplet to plot")
    figure = Figure(figsize=(3 * cell_inches, rows * cell_inches), layout="constrained")
    axes = np.asarray(figure.subplots(rows, 3, squeeze=False))
    for row, triplet in enumerate(triplets):
        for column, (title, image) in enumerate(
            zip(("anchor", "positive", "negative"), triplet, strict=True)
        ):
            axis = axes[row, column]
            axis.imshow(to_display(image), cmap="gray" if np.ndim(to_display(image)) == 2 else None)
            axis.set_xticks([])
            axis.set_yticks([])
            label = title if row == 0 else ""
            if captions is not None:
                label = f"{label}\n{captions[row][column]}" if label else captions[row][column]
            axis.set_title(label, fontsize=8)
    return figure
