"""Retrieval metrics against brute force; de-duplication of padded distributed batches."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lightning_siamese.metrics import SplitMetrics
from lightning_siamese.retrieval import rank_metrics, retrieval_ranks


def brute_force_ranks(queries: torch.Tensor, gallery: torch.Tensor) -> list[int]:
    similarity = F.normalize(queries, dim=1) @ F.normalize(gallery, dim=1).T
    ranks = []
    for i, row in enumerate(similarity):
        order = torch.argsort(row, descending=True).tolist()
        ranks.append(order.index(i) + 1)
    return ranks


@pytest.mark.parametrize("block_size", [1, 3, 1024])
def test_ranks_match_brute_force_for_any_block_size(block_size: int) -> None:
    generator = torch.Generator().manual_seed(0)
    queries = torch.randn(50, 8, generator=generator)
    gallery = queries + 0.9 * torch.randn(50, 8, generator=generator)
    ranks = retrieval_ranks(queries, gallery, block_size=block_size)
    assert ranks.tolist() == brute_force_ranks(queries, gallery)


def test_rank_metrics_known_answer() -> None:
    metrics = rank_metrics(torch.tensor([1, 2, 6, 30]))
    assert metrics["recall@1"] == 0.25
    assert metrics["recall@5"] == 0.5
    assert metrics["recall@10"] == 0.75
    assert metrics["recall@20"] == 0.75
    assert metrics["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 6 + 1 / 30) / 4)
    assert metrics["median_rank"] == 2.0  # torch's median: the lower of the two middle values


def test_split_metrics_on_hand_built_embeddings() -> None:
    anchor = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    positive = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.5, -0.5]])  # anchor 2 prefers another
    negative = torch.tensor([[0.0, 1.0], [1.0, 0.0], [-1.0, 0.1]])
    metric = SplitMetrics("squared_l2")
    metric.update(torch.arange(3), anchor, positive, negative)
    result = {key: value.item() for key, value in metric.compute().items()}
    assert result["pairs"] == 3
    assert result["recall@1"] == pytest.approx(2 / 3)
    assert result["triplet_accuracy"] == pytest.approx(2 / 3)  # pair 2's negative is closer
    assert result["cosine_positive"] == pytest.approx(
        F.cosine_similarity(anchor, positive).mean().item()
    )


def test_padding_duplicates_are_removed() -> None:
    generator = torch.Generator().manual_seed(1)
    embeddings = [torch.randn(7, 4, generator=generator) for _ in range(3)]
    once = SplitMetrics()
    once.update(torch.arange(7), *embeddings)
    padded = SplitMetrics()
    # Two "ranks" as a DistributedSampler would shard 7 items: the last shard repeats item 0.
    order = [torch.tensor([0, 2, 4, 6]), torch.tensor([1, 3, 5, 0])]
    for index in order:
        padded.update(index, *(e[index] for e in embeddings))
    assert {k: v.item() for k, v in once.compute().items()} == {
        k: v.item() for k, v in padded.compute().items()
    }
