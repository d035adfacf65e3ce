"""Retrieval metrics against brute force; de-duplication of padded distributed batches."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import brute_force_rank_metrics
from lightning_siamese.retrieval.metrics import SplitMetrics
from lightning_siamese.retrieval.ranks import rank_metrics, retrieval_ranks


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
    assert ranks.tied.tolist() == [0] * 50
    assert ranks.expected().tolist() == brute_force_ranks(queries, gallery)


def test_a_collapsed_model_scores_chance() -> None:
    """All embeddings equal: every true match ties with all N items, recall@k = k / N."""
    count = 40
    same = torch.ones(count, 8)
    metrics = rank_metrics(retrieval_ranks(same, same))
    for k in (1, 5, 10, 20):
        assert metrics[f"recall@{k}"] == pytest.approx(k / count)
    assert metrics["mrr"] == pytest.approx(sum(1 / r for r in range(1, count + 1)) / count)
    assert metrics["median_rank"] == pytest.approx((count + 1) / 2)


def test_a_duplicated_gallery_image_shares_the_rank() -> None:
    gallery = torch.eye(4)
    gallery[3] = gallery[0]  # query 0's true match has a twin in the gallery; so does query 3's
    queries = gallery + 0.1 * torch.randn(4, 4, generator=torch.Generator().manual_seed(0))
    ranks = retrieval_ranks(queries, gallery)
    assert ranks.tied.tolist() == [1, 0, 0, 1]
    assert ranks.expected().tolist() == [1.5, 1.0, 1.0, 1.5]
    metrics = rank_metrics(ranks)
    assert metrics["recall@1"] == pytest.approx((0.5 + 1 + 1 + 0.5) / 4)
    assert metrics["mrr"] == pytest.approx((0.75 + 1 + 1 + 0.75) / 4)


@pytest.mark.parametrize("seed", range(6))
def test_ties_match_a_brute_force_reference(seed: int) -> None:
    """Planted ties: gallery items are copies of a few distinct vectors, so many tie exactly."""
    generator = torch.Generator().manual_seed(seed)
    count = 30
    pool = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    source = torch.randint(0, 6, (count,), generator=generator)
    gallery = pool[source]
    queries = gallery + 0.8 * torch.randn(count, 5, generator=generator, dtype=torch.float64)
    similarity = (F.normalize(queries, dim=1) @ F.normalize(gallery, dim=1).T).tolist()
    expected = brute_force_rank_metrics(similarity, tied=lambda i, j: bool(source[i] == source[j]))
    found = rank_metrics(retrieval_ranks(queries.float(), gallery.float(), block_size=7))
    assert found == pytest.approx(expected, abs=1e-6)


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
