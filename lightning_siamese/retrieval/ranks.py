"""Exact left -> right retrieval by cosine similarity: ranks, top-k and rank metrics. Pure torch,
with faiss (``pip install lightning-siamese[faiss]``) for the CPU top-k when it is installed.

Retrieval ranks every gallery item for every query, in row blocks so memory stays O(block x N).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

RECALL_AT = (1, 5, 10, 20)
#: Cosine similarities this close to the true match's count as tied with it: float32 matrix
#: products round the same dot product differently at different positions (two copies of one
#: image score up to ~1e-6 apart at 256 dimensions), and no ranking should rest on that.
TIE_TOLERANCE = 1e-5


@dataclass(frozen=True)
class Ranks:
    """Where each query's true match stands in its ranking: ``above`` gallery items are more
    similar to the query, ``tied`` other items as similar (within :data:`TIE_TOLERANCE`).

    Ties are broken uniformly at random, in expectation: the true match's rank is uniform on
    ``above + 1 ... above + tied + 1``, so ties cost what a random order would cost. A collapsed
    model (all embeddings equal) then ranks every true match at (N + 1) / 2 and scores
    recall@k = k / N, instead of the perfect score that counting ties in its favour would give.
    """

    above: torch.Tensor
    tied: torch.Tensor

    def __len__(self) -> int:
        return len(self.above)

    def expected(self) -> torch.Tensor:
        """The expected rank of each true match (1 = best): ``above + 1 + tied / 2``."""
        return self.above.double() + 1 + self.tied.double() / 2

    @classmethod
    def from_ranks(cls, ranks: torch.Tensor) -> Ranks:
        """Plain integer ranks, without ties."""
        ranks = torch.as_tensor(ranks, dtype=torch.long)
        return cls(ranks - 1, torch.zeros_like(ranks))


def with_offset(
    queries: torch.Tensor, gallery: torch.Tensor, gallery_offset: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit rows, with one more column when ``gallery_offset`` is given (1 for the queries,
    minus the offset for the gallery), so their products are ``cos(q, g) - offset[g]``."""
    queries = F.normalize(queries.float(), dim=1)
    gallery = F.normalize(gallery.float(), dim=1)
    if gallery_offset is None:
        return queries, gallery
    offset = gallery_offset.to(gallery.device, torch.float32)[:, None]
    return torch.cat([queries, torch.ones_like(queries[:, :1])], 1), torch.cat(
        [gallery, -offset], 1
    )


def retrieval_ranks(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    block_size: int = 1024,
    gallery_offset: torch.Tensor | None = None,
) -> Ranks:
    """Where ``gallery[i]`` stands among all gallery items for ``queries[i]``, by cosine
    similarity less ``gallery_offset`` (a re-ranking's, :mod:`~.reranking`; default none) (see
    :class:`Ranks`); in blocks of ``block_size`` queries."""
    queries, gallery = with_offset(queries, gallery, gallery_offset)
    above, tied = [], []
    for start in range(0, len(queries), block_size):
        block = queries[start : start + block_size]
        similarity = block @ gallery.T
        true = similarity[torch.arange(len(block)), torch.arange(start, start + len(block))]
        difference = similarity - true[:, None]
        above.append((difference > TIE_TOLERANCE).sum(dim=1))
        # The true match itself is within the tolerance and not a tie.
        tied.append((difference.abs() <= TIE_TOLERANCE).sum(dim=1) - 1)
    if not above:
        empty = torch.zeros(0, dtype=torch.long)
        return Ranks(empty, empty)
    return Ranks(torch.cat(above).cpu(), torch.cat(tied).cpu())


def rank_metrics(
    ranks: Ranks | torch.Tensor, recall_at: tuple[int, ...] = RECALL_AT
) -> dict[str, float]:
    """recall@k (share of queries whose true match is in the top k) and MRR, each the
    expectation under a uniformly random order of tied items, and the median of the expected
    ranks (plain integer ranks are taken as untied)."""
    if not isinstance(ranks, Ranks):
        ranks = Ranks.from_ranks(ranks)
    above, tied = ranks.above.double(), ranks.tied.double()
    metrics = {
        f"recall@{k}": ((k - above) / (tied + 1)).clamp(0, 1).mean().item() for k in recall_at
    }
    # E[1 / rank] for a rank uniform on a+1 .. a+t+1: (H(a+t+1) - H(a)) / (t+1), with the
    # harmonic numbers H(n) = digamma(n + 1) + Euler's gamma.
    harmonic = torch.special.digamma(above + tied + 2) - torch.special.digamma(above + 1)
    metrics["mrr"] = (harmonic / (tied + 1)).mean().item()
    metrics["median_rank"] = ranks.expected().median().item()
    return metrics
