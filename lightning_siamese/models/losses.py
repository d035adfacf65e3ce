"""Triplet loss with a choice of distance and in-batch mining, and InfoNCE. Pure torch.

The default is the Keras example's loss: ``mean(max(|a - p|^2 - |a - n|^2 + 0.5, 0))`` over the
batch.
With mining, every image in the batch that belongs neither to the anchor's pair nor to its group
(unless group-mates are allowed as negatives) is a candidate negative (with one look-alike pair
per identity, mining comes almost free): ``batch_hard`` takes the closest (Hermans et al., 2017,
"In Defense of the Triplet Loss"), ``semi_hard`` the closest that is still farther than the
positive (Schroff et al., 2015, FaceNet), or the farthest when none is.

:class:`InfoNCELoss` (NT-Xent, Chen et al., 2020, SimCLR; CLIP's symmetric contrastive loss)
treats every batch as a classification: each image must pick its pair partner among all the
batch's images, with the same candidates (and group-mates left out) as mining.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from lightning_siamese.errors import ConfigError
from lightning_siamese.models.distances import Distance, paired_distance, pairwise_distance

Mining = Literal["none", "semi_hard", "batch_hard"]
LossName = Literal["triplet", "infonce"]


class TripletLoss(nn.Module):
    """Triplet margin loss.

    Args:
        margin: the required gap between d(a, n) and d(a, p); unused with ``soft_margin``.
        distance: ``squared_l2`` (the Keras example's), ``l2`` or ``cosine`` (1 - cosine
            similarity).
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
        if not (math.isfinite(margin) and margin >= 0):
            raise ConfigError(f"margin must be a finite number >= 0, got {margin}")
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
        group_ids: torch.Tensor | None = None,
        negative_group_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean loss over the anchors.

        Args:
            anchor, positive, negative: (B, D) embeddings; row i is a triplet.
            group_ids: (B,) identity of each anchor/positive: its pair, or its group, so that no
                candidate of the anchor's own pair or group is mined as its negative; default
                ``arange(B)``.
            negative_group_ids: (B,) the same identity of each given negative; default: one
                not in the batch. An anchor with no candidate left keeps its given negative.
        """
        losses = self._losses(
            anchor, positive, negative, group_ids, negative_group_ids, self.mining
        )
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
        group_ids: torch.Tensor | None,
        negative_group_ids: torch.Tensor | None,
        mining: Mining,
    ) -> torch.Tensor:
        loss = self._directed(anchor, positive, negative, group_ids, negative_group_ids, mining)
        if self.symmetric:
            reverse = self._directed(
                positive, anchor, negative, group_ids, negative_group_ids, mining
            )
            loss = (loss + reverse) / 2
        return loss

    def _directed(
        self,
        anchor: torch.Tensor,
        positive: torch.Tensor,
        negative: torch.Tensor,
        group_ids: torch.Tensor | None,
        negative_group_ids: torch.Tensor | None,
        mining: Mining,
    ) -> torch.Tensor:
        """Per-anchor losses."""
        d_ap = paired_distance(anchor, positive, self.distance)
        if mining == "none":
            d_an = paired_distance(anchor, negative, self.distance)
        else:
            d_an = self._mine(anchor, positive, negative, d_ap, group_ids, negative_group_ids)
        gap = d_ap - d_an
        return F.softplus(gap) if self.soft_margin else F.relu(gap + self.margin)

    def _mine(
        self,
        anchor: torch.Tensor,
        positive: torch.Tensor,
        negative: torch.Tensor,
        d_ap: torch.Tensor,
        group_ids: torch.Tensor | None,
        negative_group_ids: torch.Tensor | None,
    ) -> torch.Tensor:
        batch = anchor.shape[0]
        if group_ids is None:
            group_ids = torch.arange(batch, device=anchor.device)
        if negative_group_ids is None:
            negative_group_ids = torch.full_like(group_ids, -1)
        candidates = torch.cat([anchor, positive, negative])
        candidate_groups = torch.cat([group_ids, group_ids, negative_group_ids])
        distances = pairwise_distance(anchor, candidates, self.distance)
        valid = candidate_groups[None, :] != group_ids[:, None]
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


class InfoNCELoss(nn.Module):
    """InfoNCE / NT-Xent over the batch's pairs, on cosine similarity.

    Each of the 2B images of the batch's B pairs is an anchor; its pair partner is its positive,
    and the batch's other images (both sides of the other pairs and the B given negatives) are
    its negatives, except those of its own group (as for mining). Per anchor:
    ``-log(exp(s_ap / t) / (exp(s_ap / t) + sum_n exp(s_an / t)))``; the loss is the mean.

    Args:
        temperature: ``t``; lower weighs the hardest negatives more (SimCLR used 0.1-0.5,
            CLIP learns about 0.01).
    """

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        if not (math.isfinite(temperature) and temperature > 0):
            raise ConfigError(f"temperature must be a finite number > 0, got {temperature}")
        self.temperature = temperature

    def forward(
        self,
        anchor: torch.Tensor,
        positive: torch.Tensor,
        negative: torch.Tensor,
        group_ids: torch.Tensor | None = None,
        negative_group_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean loss over the 2B anchors; ``group_ids`` and ``negative_group_ids`` as for
        :meth:`TripletLoss.forward`."""
        batch = anchor.shape[0]
        if group_ids is None:
            group_ids = torch.arange(batch, device=anchor.device)
        if negative_group_ids is None:
            negative_group_ids = torch.full_like(group_ids, -1)
        queries = F.normalize(torch.cat([anchor, positive]), dim=1)
        candidates = torch.cat([queries, F.normalize(negative, dim=1)])
        logits = queries @ candidates.T / self.temperature  # (2B, 3B)
        rows = torch.arange(2 * batch, device=anchor.device)
        partner = (rows + batch) % (2 * batch)
        query_ids = torch.cat([group_ids, group_ids])
        candidate_ids = torch.cat([group_ids, group_ids, negative_group_ids])
        masked = candidate_ids[None, :] == query_ids[:, None]  # itself, its group, its partner
        masked[rows, partner] = False  # the partner is the positive
        logits = logits.masked_fill(masked, float("-inf"))
        return F.cross_entropy(logits, partner)

    def per_triplet(
        self, anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor
    ) -> torch.Tensor:
        """The loss of each given triplet, (B,), with its own negative as the only one (the
        anchor picks its positive over its negative): independent of batching, like
        :meth:`TripletLoss.per_triplet`."""
        s_ap = F.cosine_similarity(anchor, positive, dim=1)
        s_an = F.cosine_similarity(anchor, negative, dim=1)
        return F.softplus((s_an - s_ap) / self.temperature)


def make_loss(
    loss: LossName,
    margin: float,
    distance: Distance,
    soft_margin: bool,
    mining: Mining,
    symmetric: bool,
    temperature: float,
) -> TripletLoss | InfoNCELoss:
    """The model's loss from its settings (the triplet settings are unused by InfoNCE)."""
    if loss == "infonce":
        return InfoNCELoss(temperature)
    if loss != "triplet":
        raise ConfigError(f"loss must be 'triplet' or 'infonce', got {loss!r}")
    return TripletLoss(margin, distance, soft_margin, mining, symmetric)
