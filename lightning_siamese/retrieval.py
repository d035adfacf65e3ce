"""Exact left -> right retrieval by cosine similarity: ranks, top-k and rank metrics. Pure torch.

Retrieval ranks every gallery item for every query, in row blocks so memory stays O(block x N).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

RECALL_AT = (1, 5, 10, 20)


def retrieval_ranks(
    queries: torch.Tensor, gallery: torch.Tensor, block_size: int = 1024
) -> torch.Tensor:
    """Rank (1 = best) of ``gallery[i]`` among all gallery items for ``queries[i]``, by cosine.

    Ties count in the query's favour: rank = 1 + the number of items strictly more similar.
    """
    queries = F.normalize(queries.float(), dim=1)
    gallery = F.normalize(gallery.float(), dim=1)
    ranks = []
    for start in range(0, len(queries), block_size):
        block = queries[start : start + block_size]
        similarity = block @ gallery.T
        true = similarity[torch.arange(len(block)), torch.arange(start, start + len(block))]
        ranks.append(1 + (similarity > true[:, None]).sum(dim=1))
    return torch.cat(ranks) if ranks else torch.zeros(0, dtype=torch.long)


def top_k(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    k: int,
    exclude: Sequence[int | None] | None = None,
    block_elements: int = 1 << 24,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` gallery rows most cosine-similar to each query: ``(scores, indices)``, (Q, k)
    each, best first, on ``device`` (default: the gallery's, so CUDA tensors stay on the GPU).

    Exact (``torch.topk``); the score matrix is built ``block_elements // len(gallery)`` query
    rows at a time, so memory stays bounded whatever the sizes. ``k`` is capped at the gallery
    size. ``exclude[i]`` is a gallery row left out of query ``i``'s results (the query itself)
    or None; an excluded row that still has to fill the top ``k`` scores ``-inf``.
    """
    device = torch.device(device) if device is not None else gallery.device
    gallery = F.normalize(gallery.to(device, torch.float32), dim=1)
    queries = F.normalize(queries.to(device, torch.float32), dim=1)
    count = min(k, gallery.shape[0])
    block = max(1, block_elements // max(1, gallery.shape[0]))
    scores, indices = [], []
    for start in range(0, queries.shape[0], block):
        similarity = queries[start : start + block] @ gallery.T
        if exclude is not None:
            for offset, row in enumerate(exclude[start : start + block]):
                if row is not None:
                    similarity[offset, row] = float("-inf")
        best = torch.topk(similarity, count, dim=1)
        scores.append(best.values)
        indices.append(best.indices)
    if not scores:
        empty = torch.zeros(0, count, device=device)
        return empty, empty.long()
    return torch.cat(scores), torch.cat(indices)


def rank_metrics(ranks: torch.Tensor, recall_at: tuple[int, ...] = RECALL_AT) -> dict[str, float]:
    """recall@k (share of queries whose true match is in the top k), MRR and median rank."""
    ranks_f = ranks.float()
    metrics = {f"recall@{k}": (ranks <= k).float().mean().item() for k in recall_at}
    metrics["mrr"] = (1.0 / ranks_f).mean().item()
    metrics["median_rank"] = ranks_f.median().item()
    return metrics
