"""Plots as pure functions: images or tensors in, a matplotlib ``Figure`` out (no pyplot state);
and their PNG files, written whole and marked as this package's."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from PIL import Image

from lightning_siamese.files import atomic_write, display_path
from lightning_siamese.outputs import SOFTWARE

ImageLike = Image.Image | torch.Tensor | np.ndarray


def save_figure(figure: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write ``figure`` to ``path`` as a PNG, whole (a kill leaves the old file or the new one),
    its ``Software`` field naming this package so that a later run may replace it
    (:func:`written_here`)."""
    path = Path(path)
    with atomic_write(path) as handle:
        figure.savefig(handle, dpi=dpi, format="png", metadata={"Software": SOFTWARE})
    return path


def written_here(path: str | Path) -> bool:
    """Whether ``path`` is a PNG that :func:`save_figure` wrote."""
    with Image.open(path) as image:
        return image.format == "PNG" and str(image.info.get("Software", "")) == SOFTWARE


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


def caption(text: str) -> str:
    """``text`` safe to draw as a title: bytes of a file name that are not UTF-8 (surrogates)
    are shown escaped, and ``$`` is not read as the start of mathematical notation."""
    return display_path(text).replace("$", r"\$")


def plot_triplets(
    triplets: Sequence[tuple[ImageLike, ImageLike, ImageLike]],
    captions: Sequence[tuple[str, str, str]] | None = None,
    cell_inches: float = 2.0,
) -> Figure:
    """A grid with one (anchor, positive, negative) triplet per row: the Keras example's
    ``visualize()``.

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
                text = caption(captions[row][column])
                label = f"{label}\n{text}" if label else text
            axis.set_title(label, fontsize=8)
    return figure


def _frame(axis: Axes, colour: str, width: float) -> None:
    axis.set_frame_on(True)
    for spine in axis.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(width)


#: Frame colours: the query, a true match, a true match shown after the top-k, other results.
QUERY, MATCH, LATE_MATCH, OTHER = "#1f77b4", "#2ca02c", "#d62728", "#bbbbbb"


def plot_retrieval(
    rows: Sequence[tuple[ImageLike, str, Sequence[tuple[ImageLike, str, bool | None]]]],
    cell_inches: float = 1.6,
) -> Figure:
    """Ranked matches, one query per row: the query, then its results left to right, each with
    its caption underneath (retrieval examples of a split, ``search``'s montage).

    Args:
        rows: ``(query_image, query_caption, results)``; ``results`` are ``(image, caption,
            is_true_match)``, best first, and rows may have fewer results than others. A true
            match is framed green, a last result marked as the true match but shown after the
            top-k (caption "true match, rank 12") red, other results grey; ``None`` (no true
            match known, as in a search) leaves the result unframed.
    """
    if not rows:
        raise ValueError("no query to plot")
    columns = 1 + max(len(results) for _, _, results in rows)
    # Fixed margins in inches (constrained layout is slow with many axes): a title line on top,
    # two caption lines under every row.
    title, caption_space, gap = 0.25, 0.4, 0.1
    width = columns * cell_inches + (columns + 1) * gap
    height = title + len(rows) * (cell_inches + caption_space) + gap
    figure = Figure(figsize=(width, height))
    figure.subplots_adjust(
        left=gap / width,
        right=1 - gap / width,
        top=1 - title / height,
        bottom=caption_space / height,
        wspace=gap / cell_inches,
        hspace=caption_space / cell_inches,
    )
    axes = np.asarray(figure.subplots(len(rows), columns, squeeze=False))
    for row, (query, query_caption, results) in enumerate(rows):
        cells: list[tuple[ImageLike, str, bool | None]] = [(query, query_caption, None)]
        cells += list(results)
        for column in range(columns):
            axis = axes[row, column]
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title("query" if column == 0 else f"#{column}", fontsize=8)
            if column >= len(cells):
                axis.set_axis_off()
                continue
            image, text, is_match = cells[column]
            display = to_display(image)
            axis.imshow(display, cmap="gray" if display.ndim == 2 else None)
            axis.set_xlabel(caption(text), fontsize=7)
            late = is_match and column == len(cells) - 1 and text.startswith("true match")
            if column == 0:
                _frame(axis, QUERY, 2)
            elif is_match is not None:
                _frame(axis, LATE_MATCH if late else MATCH if is_match else OTHER, 3)
    return figure


def plot_distances(
    positive: torch.Tensor,
    negative: torch.Tensor,
    margin: float | None = None,
    distance: str = "distance",
    bins: int = 40,
) -> Figure:
    """Histograms of d(anchor, positive) and d(anchor, negative), and of their difference.

    The loss wants ``d(a,n) - d(a,p) >= margin``: the right panel shows how many triplets
    reach it (the margin and zero are marked).
    """
    d_ap = positive.detach().float().cpu().numpy()
    d_an = negative.detach().float().cpu().numpy()
    figure = Figure(figsize=(9, 3.2), layout="constrained")
    left, right = figure.subplots(1, 2)
    edges = np.histogram_bin_edges(np.concatenate([d_ap, d_an]), bins=bins)
    left.hist(d_ap, bins=edges, alpha=0.6, color="#2ca02c", label="anchor-positive")
    left.hist(d_an, bins=edges, alpha=0.6, color="#d62728", label="anchor-negative")
    left.set_xlabel(distance)
    left.set_ylabel("triplets")
    left.legend(fontsize=8)
    left.set_title(f"distances ({len(d_ap)} triplets)", fontsize=9)
    gap = d_an - d_ap
    right.hist(gap, bins=bins, color="#1f77b4", alpha=0.8)
    right.axvline(0, color="black", linewidth=1)
    title = f"d(a,n) - d(a,p): {np.mean(gap > 0):.1%} > 0"
    if margin is not None:
        right.axvline(margin, color="#ff7f0e", linestyle="--", label=f"margin {margin:g}")
        right.legend(fontsize=8)
        title += f", {np.mean(gap >= margin):.1%} >= margin"
    right.set_title(title, fontsize=9)
    right.set_xlabel(f"{distance} difference")
    return figure


def pca_2d(embeddings: torch.Tensor) -> torch.Tensor:
    """The first two principal components of the rows: (N, D) -> (N, 2)."""
    data = embeddings.detach().float().cpu()
    data = data - data.mean(dim=0, keepdim=True)
    if len(data) < 2:
        return torch.zeros(len(data), 2)
    _, _, vectors = torch.linalg.svd(data, full_matrices=False)
    projected = data @ vectors[:2].T
    return torch.nn.functional.pad(projected, (0, 2 - projected.shape[1]))


def plot_projection(left: torch.Tensor, right: torch.Tensor, links: int = 25) -> Figure:
    """PCA of the unit-normalised embeddings of both sides; ``links`` pairs joined by a line."""
    both = torch.nn.functional.normalize(torch.cat([left, right]).float(), dim=1)
    points = pca_2d(both).numpy()
    count = len(left)
    figure = Figure(figsize=(5, 5), layout="constrained")
    axis = figure.subplots()
    for index in range(min(links, count)):
        axis.plot(*zip(points[index], points[count + index], strict=True), color="#999999", lw=0.6)
    axis.scatter(points[:count, 0], points[:count, 1], s=10, color="#1f77b4", label="left (query)")
    axis.scatter(
        points[count:, 0],
        points[count:, 1],
        s=10,
        marker="x",
        color="#ff7f0e",
        label="right (match)",
    )
    axis.legend(fontsize=8)
    axis.set_title(
        f"PCA of {count} pairs' embeddings (lines: {min(links, count)} pairs)", fontsize=9
    )
    axis.set_xticks([])
    axis.set_yticks([])
    return figure


def plot_roc(
    fmr: torch.Tensor, tmr: torch.Tensor, marks: Sequence[tuple[str, float, float]] = ()
) -> Figure:
    """The ROC curve (true-match rate against false-match rate, log scale from 1e-4) through
    its exact corners, with ``marks`` ``(label, fmr, tmr)`` (operating points) drawn on it."""
    figure = Figure(figsize=(5, 4), layout="constrained")
    axis = figure.subplots()
    floor = 1e-4
    # Corners from (1, 1) down: the curve drops to the next corner's TMR, then runs left.
    axis.step(fmr.clamp(min=floor).numpy(), tmr.numpy(), where="pre", color="tab:blue")
    for label, x, y in marks:
        axis.plot([max(x, floor)], [y], "o", label=f"{label}: TMR {y:.3f} at FMR {x:.4f}")
    axis.set(xscale="log", xlim=(floor, 1), ylim=(0, 1.01))
    axis.set(xlabel="false-match rate (non-matching pairs above the threshold)")
    axis.set(ylabel="true-match rate", title="ROC: every matching vs. non-matching pair")
    axis.grid(alpha=0.3)
    if marks:
        axis.legend(loc="lower right", fontsize=8)
    return figure


def plot_similarities(
    genuine: torch.Tensor, impostor: torch.Tensor, threshold: float | None = None
) -> Figure:
    """Histograms (counts in equal bins over [-1, 1], each as a share of its pairs) of the
    matching and non-matching pairs' cosine similarities, with the match threshold."""
    figure = Figure(figsize=(5, 4), layout="constrained")
    axis = figure.subplots()
    edges = np.linspace(-1, 1, len(genuine) + 1)
    for counts, label in ((impostor, "non-matching pairs"), (genuine, "matching pairs")):
        share = (counts / max(1.0, float(counts.sum()))).numpy()
        axis.stairs(share, edges, fill=True, alpha=0.5, label=f"{label} ({int(counts.sum()):,})")
    if threshold is not None and np.isfinite(threshold):
        axis.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f}")
    axis.set(xlabel="cosine similarity", ylabel="share of pairs", title="Similarities")
    axis.legend(fontsize=8)
    return figure
