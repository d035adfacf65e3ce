"""Gallery-aware re-ranking: CSLS (cross-domain similarity local scaling, Conneau et al., ICLR
2018), which lowers the gallery's hubs. Pure torch.

Some gallery images (hubs) are near many queries and crowd every query's top ranks. CSLS scores
a query ``q`` and a gallery image ``g`` by ``2 cos(q, g) - r(q) - r(g)``: ``r(g)`` is the mean
cosine of ``g`` to its ``k`` most similar queries (how much of a hub it is), ``r(q)`` the mean
cosine of ``q`` to its ``k`` most similar gallery images. ``r(q)`` is the same for all of a
query's candidates, so a query's ranking is that of ``cos(q, g) - r(g) / 2``: a per-gallery
offset, which :func:`~lightning_siamese.retrieval.ranks.retrieval_ranks` and
:func:`~lightning_siamese.retrieval.nearest.top_k` take as ``gallery_offset``. Exact: the
``k`` nearest queries of every gallery image come from the one batched
:func:`~lightning_siamese.retrieval.nearest.top_k`. The queries must be many (a split's left
images, a folder of queries): ``r(g)`` is estimated from them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch

from lightning_siamese.errors import ConfigError
from lightning_siamese.retrieval.nearest import top_k

Rerank = Literal["none", "csls"]
RERANKS = ("none", "csls")


def _mean_top(
    rows: torch.Tensor, others: torch.Tensor, k: int, exclude: Sequence[int | None] | None
) -> torch.Tensor:
    """Each row's mean cosine similarity to its ``k`` most similar ``others`` (``exclude[i]``
    left out of row ``i``'s: a query that is itself a gallery image)."""
    scores, _ = top_k(rows, others, k, exclude, device="cpu", backend="torch")
    return scores.masked_fill(~torch.isfinite(scores), torch.nan).nanmean(dim=1)


def hubness(
    gallery: torch.Tensor,
    queries: torch.Tensor,
    k: int,
    exclude: Sequence[int | None] | None = None,
) -> torch.Tensor:
    """``r(g)``: each gallery row's mean cosine similarity to its ``k`` most similar queries;
    ``exclude[i]``, a gallery row that is query ``i`` itself, does not count that query."""
    query_of: list[int | None] | None = None
    if exclude is not None:
        query_of = [None] * len(gallery)
        for query, row in enumerate(exclude):
            if row is not None:
                query_of[row] = query
    return _mean_top(gallery, queries, k, query_of)


def check_rerank(rerank: str | None, k: int | None) -> None:
    """Raise :class:`ConfigError` for an unknown method or a ``k`` below 1 (None: not given,
    nothing to check)."""
    if rerank is not None and rerank not in RERANKS:
        raise ConfigError(f"rerank must be one of {', '.join(RERANKS)}; got {rerank!r}")
    if k is not None and not (isinstance(k, int) and k >= 1):
        raise ConfigError(f"rerank_k must be an integer >= 1, got {k!r}")


def rerank_note(rerank: str, k: int) -> str:
    """The line a report shows about the ranking ("" for plain cosine)."""
    return "" if rerank == "none" else f"re-ranked by {rerank} (k={k}); top-k scores are CSLS"


def resolve_rerank(
    rerank: str | None, k: int | None, hparams: Mapping[str, Any]
) -> tuple[str, int]:
    """The re-ranking asked (``rerank``, ``k``), or where None the model's own setting
    (``hparams``' ``rerank`` and ``rerank_k``; plain cosine for a model without them), checked."""
    rerank = rerank if rerank is not None else str(hparams.get("rerank", "none"))
    k = k if k is not None else int(hparams.get("rerank_k", 10))
    check_rerank(rerank, k)
    return rerank, k


def gallery_offset(
    rerank: str,
    queries: torch.Tensor,
    gallery: torch.Tensor,
    k: int,
    exclude: Sequence[int | None] | None = None,
) -> torch.Tensor | None:
    """What each gallery row's score loses under ``rerank`` (None for ``none``): ``r(g) / 2``
    for ``csls`` (``exclude``: see :func:`hubness`).

    Raises:
        ConfigError: an unknown method, ``k`` below 1, or fewer than ``k`` queries.
    """
    check_rerank(rerank, k)
    if rerank == "none":
        return None
    if len(queries) < k:
        raise ConfigError(
            f"CSLS needs at least rerank_k = {k} queries to tell the gallery's hubs, got "
            f"{len(queries)}: give more queries or a smaller rerank_k"
        )
    return hubness(gallery, queries, k, exclude) / 2


def csls_scores(
    ranking_scores: torch.Tensor,
    queries: torch.Tensor,
    gallery: torch.Tensor,
    k: int,
    exclude: Sequence[int | None] | None = None,
) -> torch.Tensor:
    """The CSLS scores ``2 cos - r(q) - r(g)`` from scores ranked with :func:`gallery_offset`
    (``cos - r(g) / 2``), for display: row ``i`` is query ``i``'s (``exclude[i]``, its own
    gallery row, left out of ``r(q)``)."""
    return 2 * ranking_scores - _mean_top(queries, gallery, k, exclude)[:, None]
