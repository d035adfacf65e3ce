"""Exact left -> right retrieval by cosine similarity: ranks, top-k and rank metrics. Pure torch.

Retrieval ranks every gallery item for every query, in row blocks so memory stays O(block x N).
"""

from __future__ import annotations

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
    queries: torch.Tensor, gallery: torch.Tensor, k: int, block_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` most cosine-similar gallery rows of every query: (scores, indices), (Q, k) each,
    best first. Exact, in query blocks (memory O(block x N)); ``k`` is capped at the gallery size.
    """
    queries = F.normalize(queries.float(), dim=1)
    gallery = F.normalize(gallery.float(), dim=1)
    k = min(k, len(gallery))
    scores, indices = [], []
    for start in range(0, len(queries), block_size):
        best = torch.topk(queries[start : start + block_size] @ gallery.T, k, dim=1)
        scores.append(best.values)
        indices.append(best.indices)
    if not scores:
        return torch.zeros(0, k), torch.zeros(0, k, dtype=torch.long)
    return torch.cat(scores), torch.cat(indices)


def rank_metrics(ranks: torch.Tensor, recall_at: tuple[int, ...] = RECALL_AT) -> dict[str, float]:
    """recall@k (share of queries whose true match is in the top k), MRR and median rank."""
    ranks_f = ranks.float()
    metrics = {f"recall@{k}": (ranks <= k).float().mean().item() for k in recall_at}
    metrics["mrr"] = (1.0 / ranks_f).mean().item()
    metrics["median_rank"] = ranks_f.median().item()
    return metrics
