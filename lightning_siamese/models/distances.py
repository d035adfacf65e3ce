"""Distances between embeddings, as the losses and the split statistics use them. Pure torch."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Distance = Literal["squared_l2", "l2", "cosine"]


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
