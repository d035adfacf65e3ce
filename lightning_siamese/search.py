"""Ranking a gallery by cosine similarity to query images, and the montage of the results."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from PIL import Image

from lightning_siamese.gallery import Gallery
from lightning_siamese.images import load_image

if TYPE_CHECKING:
    pass

#: Most queries (rows) and matches (columns) drawn in the montage.
MONTAGE_ROWS = 16
MONTAGE_MATCHES = 16


# Ranking ---------------------------------------------------------------------------------------


def top_k(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    k: int,
    exclude: Sequence[int | None] | None = None,
    block_elements: int = 1 << 24,
    device: torch.device | str | None = None,
) -> list[list[tuple[int, float]]]:
    """The ``k`` gallery rows most cosine-similar to each query: ``[(row, score), ...]`` per query.

    Exact (``torch.topk``); the score matrix is built ``block_elements // len(gallery)`` query
    rows at a time, so memory stays bounded. ``exclude[i]`` is a gallery row left out of query
    ``i``'s results (the query itself), or None.
    """
    device = torch.device(device) if device is not None else gallery.device
    gallery = F.normalize(gallery.to(device, torch.float32), dim=1)
    queries = F.normalize(queries.to(device, torch.float32), dim=1)
    count = min(k, gallery.shape[0])
    block = max(1, block_elements // max(1, gallery.shape[0]))
    results: list[list[tuple[int, float]]] = []
    for start in range(0, queries.shape[0], block):
        scores = queries[start : start + block] @ gallery.T
        if exclude is not None:
            for offset, row in enumerate(exclude[start : start + block]):
                if row is not None:
                    scores[offset, row] = float("-inf")
        values, indices = torch.topk(scores, count, dim=1)
        for row_values, row_indices in zip(values.tolist(), indices.tolist(), strict=True):
            results.append(
                [
                    (index, value)
                    for index, value in zip(row_indices, row_values, strict=True)
                    if value != float("-inf")
                ]
            )
    return results


def plot_matches(
    rows: Sequence[tuple[Image.Image, Sequence[tuple[Image.Image, str]]]],
    query_captions: Sequence[str] | None = None,
    cell_inches: float = 1.6,
) -> Figure:
    """A grid with one query per row: the query first, then its matches with their captions.

    Args:
        rows: ``(query image, [(match image, caption), ...])``; rows may have fewer matches.
        query_captions: optional text under each query image (e.g. its file name).
    """
    from lightning_siamese.viz import caption, to_display

    if not rows:
        raise ValueError("no query to plot")
    columns = 1 + max(len(matches) for _, matches in rows)
    # Fixed margins in inches (no constrained layout: it is slow with many axes): a title line
    # on top, two caption lines under every row.
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
    for row, (query, matches) in enumerate(rows):
        query_caption = query_captions[row] if query_captions is not None else ""
        cells = [(query, query_caption), *matches]
        for column in range(columns):
            axis = axes[row, column]
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title("query" if column == 0 else f"#{column}", fontsize=8)
            if column >= len(cells):
                axis.set_axis_off()
                continue
            image, text = cells[column]
            display = to_display(image)
            axis.imshow(display, cmap="gray" if display.ndim == 2 else None)
            axis.set_xlabel(caption(text), fontsize=7)
            if column == 0:
                for spine in axis.spines.values():
                    spine.set_edgecolor("tab:blue")
                    spine.set_linewidth(2)
    return figure


def _thumbnail(path: Path, size: int = 128) -> Image.Image:
    """A small copy of the image for the montage; a grey square when it cannot be read."""
    try:
        image = load_image(path)
    except Exception:
        return Image.new("RGB", (size, size), (128, 128, 128))
    image.thumbnail((size, size))
    return image


def _short(name: str, limit: int = 22) -> str:
    return name if len(name) <= limit else f"{name[: limit - 1]}…"


def write_montage(
    out: Path,
    query_files: Sequence[Path],
    gallery: Gallery,
    results: Sequence[Sequence[tuple[str, float]]],
) -> str:
    """Draw the first queries and their matches into ``out``; the line to print about it."""
    shown = min(len(query_files), MONTAGE_ROWS)
    rows = []
    for path, matches in zip(query_files[:shown], results[:shown], strict=True):
        cells = [
            (_thumbnail(gallery.root / match), f"{score:.4f}\n{_short(Path(match).name)}")
            for match, score in matches[:MONTAGE_MATCHES]
        ]
        rows.append((_thumbnail(path), cells))
    figure = plot_matches(rows, [_short(path.name) for path in query_files[:shown]])
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    notes = []
    if shown < len(query_files):
        notes.append(f"first {shown} of {len(query_files):,} queries shown")
    if any(len(matches) > MONTAGE_MATCHES for matches in results[:shown]):
        notes.append(f"top {MONTAGE_MATCHES} matches shown")
    return f"montage: {out}" + (f" ({'; '.join(notes)})" if notes else "")
