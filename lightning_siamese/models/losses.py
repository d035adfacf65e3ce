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
from lightning_siamese.models.across_processes import GlobalBatch
from lightning_siamese.models.cross_batch_memory import CrossBatchMemory
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
        memory: with mining, a cross-batch memory whose entries are candidates too, and which
            takes each training batch's positives.
    """

    def __init__(
        self,
        margin: float = 0.5,
        distance: Distance = "squared_l2",
        soft_margin: bool = False,
        mining: Mining = "none",
        symmetric: bool = False,
        memory: CrossBatchMemory | None = None,
    ) -> None:
        super().__init__()
        if not (math.isfinite(margin) and margin >= 0):
            raise ConfigError(f"margin must be a finite number >= 0, got {margin}")
        if memory is not None and mining == "none":
            raise ConfigError(
                "a cross-batch memory needs InfoNCE or mining (semi_hard or batch_hard)"
            )
        self.margin = margin
        self.distance = distance
        self.soft_margin = soft_margin
        self.mining = mining
        self.symmetric = symmetric
        self.memory = memory

    def forward(
        self,
        anchor: torch.Tensor,
        positive: torch.Tensor,
        negative: torch.Tensor,
        group_ids: torch.Tensor | None = None,
        negative_group_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean loss over the anchors (of every process, under DDP, see
        :mod:`~lightning_siamese.models.across_processes`).

        Args:
            anchor, positive, negative: (B, D) embeddings; row i is a triplet.
            group_ids: (B,) identity of each anchor/positive: its pair, or its group, so that no
                candidate of the anchor's own pair or group is mined as its negative; default
                each pair its own.
            negative_group_ids: (B,) the same identity of each given negative; default: one
                not in the batch. An anchor with no candidate left keeps its given negative.
        """
        if self.mining == "none":  # each triplet alone: nothing to gather
            return self.per_triplet(anchor, positive, negative).mean()
        losses, batch = self._anchor_losses(
            anchor, positive, negative, group_ids, negative_group_ids
        )
        if self.memory is not None and self.training:
            self.memory.push(batch.positive, batch.group_ids)
        return batch.mean(losses)

    def per_anchor(
        self,
        anchor: torch.Tensor,
        positive: torch.Tensor,
        negative: torch.Tensor,
        group_ids: torch.Tensor | None = None,
        negative_group_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The loss of each of this process's anchors, (B,), as :meth:`forward` averages them
        (the memory takes nothing)."""
        if self.mining == "none":
            return self.per_triplet(anchor, positive, negative)
        return self._anchor_losses(anchor, positive, negative, group_ids, negative_group_ids)[0]

    def _anchor_losses(
        self,
        anchor: torch.Tensor,
        positive: torch.Tensor,
        negative: torch.Tensor,
        group_ids: torch.Tensor | None,
        negative_group_ids: torch.Tensor | None,
    ) -> tuple[torch.Tensor, GlobalBatch]:
        check_memory_groups(self.memory, group_ids)
        batch = GlobalBatch.gather(anchor, positive, negative, group_ids, negative_group_ids)
        pool = candidate_pool(batch, self.memory)
        mine = batch.local
        a, p, n = batch.anchor[mine], batch.positive[mine], batch.negative[mine]
        losses = self._mined(a, p, n, batch.group_ids[mine], pool)
        if self.symmetric:
            losses = (losses + self._mined(p, a, n, batch.group_ids[mine], pool)) / 2
        return losses, batch

    def per_triplet(
        self, anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor
    ) -> torch.Tensor:
        """The loss of each given triplet, (B,), with its own negative (no in-batch mining):
        for a fixed set of triplets, such as a validation split, it does not depend on how the
        triplets are batched or spread over devices."""
        loss = self._hinge(anchor, positive, paired_distance(anchor, negative, self.distance))
        if self.symmetric:
            reverse = paired_distance(positive, negative, self.distance)
            loss = (loss + self._hinge(positive, anchor, reverse)) / 2
        return loss

    def _hinge(
        self, anchor: torch.Tensor, positive: torch.Tensor, d_an: torch.Tensor
    ) -> torch.Tensor:
        gap = paired_distance(anchor, positive, self.distance) - d_an
        return F.softplus(gap) if self.soft_margin else F.relu(gap + self.margin)

    def _mined(
        self,
        anchor: torch.Tensor,
        positive: torch.Tensor,
        negative: torch.Tensor,
        group_ids: torch.Tensor,
        pool: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        """Per-anchor losses against the negative mined among the ``pool``'s candidates
        (embeddings, groups) of other groups; an anchor with none keeps its given negative."""
        candidates, candidate_groups = pool
        distances = pairwise_distance(anchor, candidates, self.distance)
        valid = candidate_groups[None, :] != group_ids[:, None]
        inf = torch.finfo(distances.dtype).max
        if self.mining == "batch_hard":
            mined = distances.masked_fill(~valid, inf).min(dim=1).values
        else:
            # semi_hard: the closest negative farther than the positive, else the farthest one.
            d_ap = paired_distance(anchor, positive, self.distance)
            farther = valid & (distances > d_ap[:, None])
            closest_farther = distances.masked_fill(~farther, inf).min(dim=1).values
            farthest = distances.masked_fill(~valid, -inf).max(dim=1).values
            mined = torch.where(farther.any(dim=1), closest_farther, farthest)
        given = paired_distance(anchor, negative, self.distance)
        return self._hinge(anchor, positive, torch.where(valid.any(dim=1), mined, given))


class InfoNCELoss(nn.Module):
    """InfoNCE / NT-Xent over the batch's pairs, on cosine similarity.

    Each of the 2B images of the batch's B pairs is an anchor; its pair partner is its positive,
    and the batch's other images (both sides of the other pairs and the B given negatives) are
    its negatives, except those of its own group (as for mining). Per anchor:
    ``-log(exp(s_ap / t) / (exp(s_ap / t) + sum_n exp(s_an / t)))``; the loss is the mean.
    Under DDP the batch is the global batch (every process's images are negatives).

    Args:
        temperature: ``t``; lower weighs the hardest negatives more (SimCLR used 0.1-0.5,
            CLIP learns about 0.01).
        memory: a cross-batch memory whose entries are negatives too, and which takes each
            training batch's positives.
    """

    def __init__(self, temperature: float = 0.1, memory: CrossBatchMemory | None = None) -> None:
        super().__init__()
        if not (math.isfinite(temperature) and temperature > 0):
            raise ConfigError(f"temperature must be a finite number > 0, got {temperature}")
        self.temperature = temperature
        self.memory = memory

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
        check_memory_groups(self.memory, group_ids)
        batch = GlobalBatch.gather(anchor, positive, negative, group_ids, negative_group_ids)
        size, mine = batch.size, batch.local
        columns, column_ids = candidate_pool(batch, self.memory)
        candidates = F.normalize(columns, dim=1)
        rows = torch.cat([mine, mine + size])  # this process's anchors, then its positives
        logits = candidates[rows] @ candidates.T / self.temperature  # (2b, 3T [+ M])
        partner = torch.cat([mine + size, mine])
        query_ids = torch.cat([batch.group_ids[mine], batch.group_ids[mine]])
        masked = column_ids[None, :] == query_ids[:, None]  # its group, partner
        masked[torch.arange(len(rows), device=anchor.device), partner] = False  # the positive
        logits = logits.masked_fill(masked, float("-inf"))
        losses = F.cross_entropy(logits, partner, reduction="none")
        if self.memory is not None and self.training:
            self.memory.push(batch.positive, batch.group_ids)
        return batch.mean(losses, per_triplet=2)

    def per_triplet(
        self, anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor
    ) -> torch.Tensor:
        """The loss of each given triplet, (B,), with its own negative as the only one (the
        anchor picks its positive over its negative): independent of batching, like
        :meth:`TripletLoss.per_triplet`."""
        s_ap = F.cosine_similarity(anchor, positive, dim=1)
        s_an = F.cosine_similarity(anchor, negative, dim=1)
        return F.softplus((s_an - s_ap) / self.temperature)


def candidate_pool(
    batch: GlobalBatch, memory: CrossBatchMemory | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every candidate of a batch-level loss and its group: the global batch's anchors,
    positives and given negatives, then the memory's entries (once it has started)."""
    embeddings = [batch.anchor, batch.positive, batch.negative]
    groups = [batch.group_ids, batch.group_ids, batch.negative_group_ids]
    remembered = memory.entries() if memory is not None else None
    if remembered is not None:
        embeddings.append(remembered[0].to(batch.anchor.device, batch.anchor.dtype))
        groups.append(remembered[1].to(batch.anchor.device))
    return torch.cat(embeddings), torch.cat(groups)


def check_memory_groups(memory: CrossBatchMemory | None, group_ids: torch.Tensor | None) -> None:
    """A memory needs the pairs' own identities: default groups (batch positions) would mask
    remembered images of other pairs that once held the same position."""
    if memory is not None and group_ids is None:
        raise ValueError("a loss with a cross-batch memory needs group_ids (each pair's identity)")


def make_loss(
    loss: LossName,
    margin: float,
    distance: Distance,
    soft_margin: bool,
    mining: Mining,
    symmetric: bool,
    temperature: float,
    memory: CrossBatchMemory | None = None,
) -> TripletLoss | InfoNCELoss:
    """The model's loss from its settings (the triplet settings are unused by InfoNCE)."""
    if loss == "infonce":
        return InfoNCELoss(temperature, memory)
    if loss != "triplet":
        raise ConfigError(f"loss must be 'triplet' or 'infonce', got {loss!r}")
    return TripletLoss(margin, distance, soft_margin, mining, symmetric, memory)
