"""What a split's embeddings say: metrics, per-query retrieval rows and pictures.

Pure torch + matplotlib (no Lightning): the logging callback, ``evaluate`` and the notebook all
report a split through :class:`SplitEmbeddings`.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from PIL import Image

from lightning_siamese.data import images
from lightning_siamese.files import atomic_write, display_path
from lightning_siamese.models.distances import Distance, paired_distance
from lightning_siamese.retrieval.metrics import split_metrics
from lightning_siamese.retrieval.nearest import top_k
from lightning_siamese.retrieval.plots import (
    plot_distances,
    plot_projection,
    plot_retrieval,
)
from lightning_siamese.retrieval.ranks import Ranks, retrieval_ranks
from lightning_siamese.retrieval.reranking import csls_scores, gallery_offset
from lightning_siamese.retrieval.verification import FMR_TARGETS, Verification, verification

TABLE_COLUMNS = ["query", "true_match", "rank", "true_match_score", "top_k"]


@dataclass
class SplitEmbeddings:
    """One split's pairs and embeddings, row ``i`` = pair ``i``.

    ``anchor`` embeds ``left[i]``, ``positive`` embeds ``right[i]`` and ``negative`` the image
    drawn as pair ``i``'s negative. Every left image is a query; the right images are the gallery.
    ``rerank`` (with ``rerank_k``) re-ranks retrieval (:mod:`~.reranking`): ranks, tables and
    pictures, whose scores are then CSLS scores.
    """

    left: Sequence[Path]
    right: Sequence[Path]
    anchor: torch.Tensor
    positive: torch.Tensor
    negative: torch.Tensor
    rerank: str = "none"
    rerank_k: int = 10
    _offset: torch.Tensor | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        sizes = {len(self.left), len(self.right), *(len(t) for t in self.tensors())}
        if len(sizes) != 1:
            raise ValueError(f"paths and embeddings of a split differ in length: {sorted(sizes)}")
        self._offset = gallery_offset(self.rerank, self.anchor, self.positive, self.rerank_k)

    def top_k(self, rows: Sequence[int] | None, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` best gallery rows of the queries ``rows`` (all: None), as ranked: scores
        (cosine, or CSLS when re-ranked) and indices."""
        queries = self.anchor if rows is None else self.anchor[list(rows)]
        scores, indices = top_k(queries, self.positive, k, gallery_offset=self._offset)
        if self._offset is not None:
            scores = csls_scores(scores, queries, self.positive, self.rerank_k)
        return scores, indices

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.anchor, self.positive, self.negative

    def __len__(self) -> int:
        return len(self.left)

    def ranks(self, block_size: int = 1024) -> Ranks:
        return retrieval_ranks(self.anchor, self.positive, block_size, self._offset)

    def verification(self, threshold: float | None = None) -> Verification:
        """The verification counts of the split's pairs (:mod:`~.verification`), with the
        non-matching pairs above ``threshold`` counted."""
        return verification(
            self.anchor, self.positive, FMR_TARGETS, () if threshold is None else (threshold,)
        )

    def metrics(
        self,
        distance: Distance = "squared_l2",
        threshold: float | None = None,
        verified: Verification | None = None,
    ) -> dict[str, float]:
        """recall@1/5/10/20, MRR, median rank, ROC AUC, EER, TMR at FMR 1e-2 and 1e-3 (and at
        ``threshold``), triplet accuracy, mean distances and cosine similarities of positives
        and negatives, and the number of pairs
        (:func:`~lightning_siamese.retrieval.metrics.split_metrics`)."""
        return split_metrics(
            *self.tensors(),
            distance,
            threshold=threshold,
            verified=verified,
            rerank=self.rerank,
            rerank_k=self.rerank_k,
        )

    def table(self, k: int = 5) -> list[dict[str, Any]]:
        """One row per query: file names, rank and score of the true match, the top-k
        (``top_k``: names and scores; ``top_k_rows``: their gallery rows).

        ``rank`` is the expected rank under a random order of tied items (2.5: tied with one
        other for second place), a whole number when there is no tie. ``true_match_score`` is
        the pair's cosine similarity; the top-k's scores are the ranking's (CSLS when
        re-ranked)."""
        ranks = self.ranks().expected().tolist()
        scores, indices = self.top_k(None, k)
        true_scores = torch.nn.functional.cosine_similarity(self.anchor, self.positive)
        rows = []
        for query in range(len(self)):
            rows.append(
                {
                    "query": display_path(self.left[query].name),
                    "true_match": display_path(self.right[query].name),
                    "rank": _number(ranks[query]),
                    "true_match_score": round(float(true_scores[query]), 4),
                    "top_k": [
                        (display_path(self.right[int(index)].name), round(float(score), 4))
                        for score, index in zip(scores[query], indices[query], strict=True)
                    ],
                    "top_k_rows": indices[query].tolist(),
                }
            )
        return rows

    def example_queries(self, count: int = 6, seed: int = 0) -> list[int]:
        """``count`` query rows drawn once by ``seed``: the same queries every epoch."""
        generator = torch.Generator().manual_seed(seed)
        return sorted(torch.randperm(len(self), generator=generator)[:count].tolist())

    def figures(
        self,
        margin: float | None = None,
        distance: Distance = "squared_l2",
        examples: int = 6,
        k: int = 5,
        thumbnail: int = 96,
    ) -> dict[str, Figure]:
        """``retrieval`` (fixed example queries with their top-k, the true match framed),
        ``distances`` (histograms with the margin) and ``projection`` (PCA)."""
        queries = self.example_queries(examples)
        scores, indices = self.top_k(queries, k)
        ranks = self.ranks().expected().tolist()

        def thumb(path: Path) -> Image.Image:
            return images.thumbnail(path, thumbnail)

        rows = []
        for row, query in enumerate(queries):
            results = [
                (thumb(self.right[int(i)]), f"{s:.3f}\n{self.right[int(i)].name}", int(i) == query)
                for s, i in zip(scores[row].tolist(), indices[row].tolist(), strict=True)
            ]
            if query not in indices[row].tolist():
                label = f"true match, rank {_number(ranks[query])}"
                results.append((thumb(self.right[query]), label, True))
            rows.append((thumb(self.left[query]), self.left[query].name, results))
        d_ap = paired_distance(self.anchor, self.positive, distance)
        d_an = paired_distance(self.anchor, self.negative, distance)
        return {
            "retrieval": plot_retrieval(rows),
            "distances": plot_distances(d_ap, d_an, margin, distance.replace("_", " ")),
            "projection": plot_projection(self.anchor, self.positive),
        }


def _number(value: float) -> int | float:
    """A whole number as an ``int``, anything else as it is."""
    return int(value) if float(value).is_integer() else value


def write_table_csv(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """The retrieval table as CSV, written whole; ``top_k`` becomes ``name (score); ...``."""
    with atomic_write(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=TABLE_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            top = "; ".join(f"{name} ({score:.4f})" for name, score in row["top_k"])
            writer.writerow({**row, "top_k": top})
    return path
