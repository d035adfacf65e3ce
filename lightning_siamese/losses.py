"""Triplet loss with a choice of distance and in-batch mining. Pure torch.

The default is the seed's loss: ``mean(max(|a - p|^2 - |a - n|^2 + 0.5, 0))`` over the batch.
With mining, every image in the batch that belongs neither to the anchor's pair nor to its group
(unless group-mates are allowed as negatives) is a candidate negative (with one look-alike pair
per identity, mining comes almost free): ``batch_hard`` takes the closest (Hermans et al., 2017,
"In Defense of the Triplet Loss"), ``semi_hard`` the closest that is still farther than the
positive (Schroff et al., 2015, FaceNet), or the farthest when none is.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from lightning_siamese.errors import ConfigError

Distance = Literal["squared_l2", "l2", "cosine"]
Mining = Literal["none", "semi_hard", "batch_hard"]


def pairwise_distance(x: torch.Tensor, y: torch.Tensor, distance: Distance) -> torch.Tensor:
    """(N, D) x (M, D) -> (N, M) distances."""
    if distance == "cosine":
        return 1 - F.normalize(x, dim=1) @ F.normalize(y, dim=1).T
    squared = (x.pow(2).sum(1, keepdim=True) - 2 * x @ y.T + y.pow(2).sum(1)[None, :]).clamp_min(0)
    return squared if distance == "squared_l2" else squared.clamp_min(1e-12).sqrt()


def paired_distance(x: torch.Tensor, y: torch.Tensor, distance: Distance) -> torch.Tensor:
    """(N, D) x (N, D) -> (N,) distances of matching rows."""
    if distance == "cosine":
        return 1 - F.cosine_similarity(x, y, dim=1)
    squared = (x - y).pow(2).sum(1)
    return squared if distance == "squared_l2" else squared.clamp_min(1e-12).sqrt()


class TripletLoss(nn.Module):
    """Triplet margin loss.

    Args:
        margin: the required gap between d(a, n) and d(a, p); unused with ``soft_margin``.
        distance: ``squared_l2`` (the seed's), ``l2`` or ``cosine`` (1 - cosine similarity).
        soft_margin: ``softplus(d(a,p) - d(a,n))`` instead of the hinge.
        mining: ``none`` (the given negatives), ``semi_hard`` or ``batch_hard`` (in-batch).
        symmetric: also use each positive as an anchor (with the anchor as its positive): both
            sides of a pair get a training signal from the same embeddings, at no extra
            network cost; the loss is the mean of the two directions.
    """

    def __init__(
        self,
        margin: float = 0.5,
        distance: Distance = "squared_l2",
        soft_margin: bool = False,
        mining: Mining = "none",
        symmetric: bool = False,
    ) -> None:
        super().__init__()
        if margin < 0:
            raise ConfigError(f"margin must be >= 0, got {margin}")
        self.margin = margin
        self.distance = distance
        self.soft_margin = soft_margin
        self.mining = mining
        self.symmetric = symmetric

    def forward(
        self,
        anchor: torch.Tensor,
        positive: torch.Tensor,
        negative: torch.Tensor,
        pair_ids: torch.Tensor | None = None,
        negative_pair_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean loss over the anchors.

        Args:
            anchor, positive, negative: (B, D) embeddings; row i is a triplet.
            pair_ids: (B,) identity of each anchor/positive: its pair, or its group, so that no
                candidate of the anchor's own pair or group is mined as its negative; default
                ``arange(B)``.
            negative_pair_ids: (B,) the same identity of each given negative; default: one
                not in the batch. An anchor with no candidate left keeps its given negative.
        """
        losses = self._losses(anchor, positive, negative, pair_ids, negative_pair_ids, self.mining)
        return losses.mean()

    def per_triplet(
        self, anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor
    ) -> torch.Tensor:
        """The loss of each given triplet, (B,), with its own negative (no in-batch mining):
        for a fixed set of triplets, such as a validation split, it does not depend on how the
        triplets are batched or spread over devices."""
        return self._losses(anchor, positive, negative, None, None, "none")

    def _losses(
        self,
        anchor: torch.Tensor,
        positive: torch.Tensor,
        negative: torch.Tensor,
        pair_ids: torch.Tensor | None,
        negative_pair_ids: torch.Tensor | None,
        mining: Mining,
    ) -> torch.Tensor:
        loss = self._directed(anchor, positive, negative, pair_ids, negative_pair_ids, mining)
        if self.symmetric:
            reverse = self._directed(
                positive, anchor, negative, pair_ids, negative_pair_ids, mining
            )
            loss = (loss + reverse) / 2
        return loss

    def _directed(
        self,
        anchor: torch.Tensor,
        positive: torch.Tensor,
        negative: torch.Tensor,
        pair_ids: torch.Tensor | None,
        negative_pair_ids: torch.Tensor | None,
        mining: Mining,
    ) -> torch.Tensor:
        """Per-anchor losses."""
        d_ap = paired_distance(anchor, positive, self.distance)
        if mining == "none":
            d_an = paired_distance(anchor, negative, self.distance)
        else:
            d_an = self._mine(anchor, positive, negative, d_ap, pair_ids, negative_pair_ids)
        gap = d_ap - d_an
        return F.softplus(gap) if self.soft_margin else F.relu(gap + self.margin)

    def _mine(
        self,
        anchor: torch.Tensor,
        positive: torch.Tensor,
        negative: torch.Tensor,
        d_ap: torch.Tensor,
        pair_ids: torch.Tensor | None,
        negative_pair_ids: torch.Tensor | None,
    ) -> torch.Tensor:
        batch = anchor.shape[0]
        if pair_ids is None:
            pair_ids = torch.arange(batch, device=anchor.device)
        if negative_pair_ids is None:
            negative_pair_ids = torch.full_like(pair_ids, -1)
        candidates = torch.cat([anchor, positive, negative])
        candidate_pairs = torch.cat([pair_ids, pair_ids, negative_pair_ids])
        distances = pairwise_distance(anchor, candidates, self.distance)
        valid = candidate_pairs[None, :] != pair_ids[:, None]
        inf = torch.finfo(distances.dtype).max
        if self.mining == "batch_hard":
            mined = distances.masked_fill(~valid, inf).min(dim=1).values
        else:
            # semi_hard: the closest negative farther than the positive, else the farthest one.
            farther = valid & (distances > d_ap[:, None])
            closest_farther = distances.masked_fill(~farther, inf).min(dim=1).values
            farthest = distances.masked_fill(~valid, -inf).max(dim=1).values
            mined = torch.where(farther.any(dim=1), closest_farther, farthest)
        # A batch of one group leaves an anchor no candidate: its given negative stands.
        given = paired_distance(anchor, negative, self.distance)
        return torch.where(valid.any(dim=1), mined, given)
