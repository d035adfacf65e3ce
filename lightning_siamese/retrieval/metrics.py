"""Split-level metrics: left -> right retrieval and triplet statistics. Pure torch + torchmetrics.

Embeddings are kept with their dataset indices, gathered across processes, and de-duplicated
(DistributedSampler pads the last shard by repeating samples), so the figures are exact and the
same on one device or many. Retrieval ranks every right image for every left image by cosine
similarity, in row blocks so memory stays O(block x N).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from lightning_siamese.models.distances import Distance, paired_distance
from lightning_siamese.retrieval.ranks import rank_metrics, retrieval_ranks
from lightning_siamese.retrieval.reranking import gallery_offset
from lightning_siamese.retrieval.verification import FMR_TARGETS, Verification, verification


def triplet_statistics(
    anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, distance: Distance
) -> dict[str, torch.Tensor]:
    """Means over the triplets: accuracy (share with d(a,p) < d(a,n)), d(a,p), d(a,n), and the
    cosine similarity of positives and of negatives (the Keras example's printout)."""
    d_ap = paired_distance(anchor, positive, distance)
    d_an = paired_distance(anchor, negative, distance)
    return {
        "triplet_accuracy": (d_ap < d_an).float().mean(),
        "distance_positive": d_ap.mean(),
        "distance_negative": d_an.mean(),
        "cosine_positive": F.cosine_similarity(anchor, positive).mean(),
        "cosine_negative": F.cosine_similarity(anchor, negative).mean(),
    }


def split_metrics(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    distance: Distance = "squared_l2",
    block_size: int = 1024,
    fmr_targets: Sequence[float] = FMR_TARGETS,
    threshold: float | None = None,
    verified: Verification | None = None,
    rerank: str = "none",
    rerank_k: int = 10,
) -> dict[str, float]:
    """The figures of a split, row ``i`` its pair ``i``: left -> right retrieval
    (:func:`~lightning_siamese.retrieval.ranks.rank_metrics`: recall@k, MRR, median rank),
    verification (:mod:`~lightning_siamese.retrieval.verification`: ROC AUC, EER, TMR and the
    threshold at each of ``fmr_targets``; with ``threshold``, one chosen on the validation
    split, its ``tmr@val_threshold`` and ``fmr@val_threshold`` here; ``verified``: these counts,
    computed already), the triplet statistics (:func:`triplet_statistics`) and the number of
    ``pairs``. The one place they are computed: validation and test (:class:`SplitMetrics`),
    ``evaluate``, the notebook. ``rerank`` (``csls``, with ``rerank_k``:
    :mod:`~lightning_siamese.retrieval.reranking`) re-ranks retrieval; verification stays on the
    pairs' cosine similarities."""
    offset = gallery_offset(rerank, anchor, positive, rerank_k)
    metrics = rank_metrics(retrieval_ranks(anchor, positive, block_size, offset))
    thresholds = () if threshold is None else (threshold,)
    counts = verified or verification(anchor, positive, fmr_targets, thresholds)
    metrics.update(counts.metrics(fmr_targets))
    if threshold is not None:
        metrics["tmr@val_threshold"], metrics["fmr@val_threshold"] = counts.rates(threshold)
    stats = triplet_statistics(anchor, positive, negative, distance)
    metrics.update({key: value.item() for key, value in stats.items()})
    metrics["pairs"] = len(anchor)
    return metrics


class SplitMetrics(Metric):
    """Retrieval, verification and triplet statistics over a whole split.

    ``update(index, anchor, positive, negative)`` with the pair index of each triplet; ``compute``
    returns :func:`split_metrics`' figures: recall@k, MRR, median rank (left -> right over the
    split), ROC AUC, EER, TMR and threshold at ``fmr_targets`` (and, with ``threshold`` set, its
    rates), triplet accuracy, mean d(a,p), d(a,n), and the mean cosine similarity of positives
    and of negatives. ``last_verification`` keeps the verification counts for a calibration.
    """

    full_state_update = False
    # States registered by `add_state`: lists of per-batch tensors (as `update` sees them; a
    # distributed sync may hand `compute` one concatenated tensor, which `dim_zero_cat` accepts).
    index: list[torch.Tensor]
    anchor: list[torch.Tensor]
    positive: list[torch.Tensor]
    negative: list[torch.Tensor]

    def __init__(
        self,
        distance: Distance = "squared_l2",
        block_size: int = 1024,
        triplet_loss: Callable[..., torch.Tensor] | None = None,
        fmr_targets: Sequence[float] = FMR_TARGETS,
    ) -> None:
        super().__init__()
        self.distance: Distance = distance
        self.block_size = block_size
        # (anchor, positive, negative) -> each triplet's loss; its mean is reported as `loss`:
        # the split's fixed triplets once each, without mining, for any batch size or devices.
        self.triplet_loss = triplet_loss
        self.fmr_targets = tuple(fmr_targets)
        # A threshold chosen on another split (the calibration's): its rates on this one.
        self.threshold: float | None = None
        # A re-ranking of retrieval (reranking.RERANKS) and its k: set by the model per split.
        self.rerank, self.rerank_k = "none", 10
        for name in ("index", "anchor", "positive", "negative"):
            self.add_state(name, default=[], dist_reduce_fx="cat")
        self.last_gathered: dict[str, torch.Tensor] = {}
        self.last_verification: Verification | None = None

    def update(
        self,
        index: torch.Tensor,
        anchor: torch.Tensor,
        positive: torch.Tensor,
        negative: torch.Tensor,
    ) -> None:
        self.index.append(index.detach())
        self.anchor.append(anchor.detach().float())
        self.positive.append(positive.detach().float())
        self.negative.append(negative.detach().float())

    def gathered(self) -> dict[str, torch.Tensor]:
        """The states as one row per pair, in pair-index order: ``index``, ``anchor``,
        ``positive``, ``negative``. Removes the distributed sampler's padding duplicates."""
        index = dim_zero_cat(self.index)
        order = torch.argsort(index, stable=True)
        keep = torch.ones_like(order, dtype=torch.bool)
        keep[1:] = index[order][1:] != index[order][:-1]
        rows = order[keep]
        gathered = {"index": index[rows]}
        for name in ("anchor", "positive", "negative"):
            gathered[name] = dim_zero_cat(getattr(self, name))[rows]
        return gathered

    def compute(self) -> dict[str, torch.Tensor]:
        gathered = self.gathered()
        # Kept for pictures and tables (gathered across processes: compute runs synced).
        self.last_gathered = {name: value.cpu() for name, value in gathered.items()}
        anchor, positive, negative = (gathered[name] for name in ("anchor", "positive", "negative"))
        thresholds = () if self.threshold is None else (self.threshold,)
        counts = verification(anchor, positive, self.fmr_targets, thresholds)
        self.last_verification = counts
        metrics = split_metrics(
            anchor,
            positive,
            negative,
            self.distance,
            self.block_size,
            self.fmr_targets,
            self.threshold,
            counts,
            self.rerank,
            self.rerank_k,
        )
        if self.triplet_loss is not None:
            metrics["loss"] = self.triplet_loss(anchor, positive, negative).mean().item()
        return {key: torch.tensor(float(value)) for key, value in metrics.items()}
