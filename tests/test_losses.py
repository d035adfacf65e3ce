"""TripletLoss and InfoNCELoss against brute-force references built from explicit triplets."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_siamese.errors import ConfigError
from lightning_siamese.models.cross_batch_memory import CrossBatchMemory
from lightning_siamese.models.distances import pairwise_distance
from lightning_siamese.models.losses import InfoNCELoss, TripletLoss


def distance(x: torch.Tensor, y: torch.Tensor, kind: str) -> float:
    if kind == "cosine":
        return 1 - float(x @ y) / (float(x.norm()) * float(y.norm()))
    squared = float(((x - y) ** 2).sum())
    return squared if kind == "squared_l2" else math.sqrt(squared)


def term(d_ap: float, d_an: float, margin: float, soft: bool) -> float:
    return math.log1p(math.exp(d_ap - d_an)) if soft else max(d_ap - d_an + margin, 0.0)


def batch(seed: int = 0, size: int = 6, dim: int = 5) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(size, dim, generator=generator, dtype=torch.float64) for _ in range(3))


def test_the_keras_examples_loss_by_hand() -> None:
    anchor = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    positive = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    negative = torch.tensor([[0.0, 0.5], [3.0, 1.0]])
    # d_ap = 1, 0; d_an = 0.25, 4 -> max(1 - 0.25 + 0.5, 0) = 1.25 and max(0 - 4 + 0.5, 0) = 0.
    assert TripletLoss()(anchor, positive, negative).item() == pytest.approx(0.625)


@pytest.mark.parametrize("kind", ["squared_l2", "l2", "cosine"])
@pytest.mark.parametrize("soft", [False, True])
def test_given_negatives_match_brute_force(kind: str, soft: bool) -> None:
    anchor, positive, negative = batch()
    loss = TripletLoss(margin=0.3, distance=kind, soft_margin=soft)
    expected = sum(
        term(distance(a, p, kind), distance(a, n, kind), 0.3, soft)
        for a, p, n in zip(anchor, positive, negative, strict=True)
    ) / len(anchor)
    assert loss(anchor, positive, negative).item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("mining", ["batch_hard", "semi_hard"])
@pytest.mark.parametrize("kind", ["squared_l2", "l2", "cosine"])
def test_mining_matches_brute_force(mining: str, kind: str) -> None:
    anchor, positive, negative = batch(seed=1, size=7)
    group_ids = torch.tensor([10, 11, 12, 13, 14, 15, 16])
    # The given negatives of triplets 0 and 1 are images of pairs 11 and 10, which are in the
    # batch: neither may serve as a negative of its own pair's anchor. The rest come from outside.
    negative_ids = torch.tensor([11, 10, 99, 98, 97, 96, 95])
    images = [(anchor[j], group_ids[j]) for j in range(7)]
    images += [(positive[j], group_ids[j]) for j in range(7)]
    images += [(negative[j], negative_ids[j]) for j in range(7)]
    total = 0.0
    for i in range(7):
        d_ap = distance(anchor[i], positive[i], kind)
        candidates = [distance(anchor[i], x, kind) for x, owner in images if owner != group_ids[i]]
        if mining == "batch_hard":
            d_an = min(candidates)
        else:
            farther = [d for d in candidates if d > d_ap]
            d_an = min(farther) if farther else max(candidates)
        total += term(d_ap, d_an, 0.2, soft=False)
    loss = TripletLoss(margin=0.2, distance=kind, mining=mining)
    value = loss(anchor, positive, negative, group_ids, negative_ids)
    assert value.item() == pytest.approx(total / 7, rel=1e-9)


@pytest.mark.parametrize("mining", ["none", "batch_hard"])
def test_symmetric_is_the_mean_of_both_directions(mining: str) -> None:
    anchor, positive, negative = batch(seed=2)
    ids, negative_ids = torch.arange(6), torch.arange(6) + 100
    one_way = TripletLoss(mining=mining)
    both = TripletLoss(mining=mining, symmetric=True)(anchor, positive, negative, ids, negative_ids)
    forward = one_way(anchor, positive, negative, ids, negative_ids)
    backward = one_way(positive, anchor, negative, ids, negative_ids)
    assert both.item() == pytest.approx((forward.item() + backward.item()) / 2, rel=1e-12)
    assert forward.item() != pytest.approx(backward.item())


def test_gradients_flow_and_margin_is_validated() -> None:
    anchor, positive, negative = (t.float().requires_grad_() for t in batch())
    TripletLoss(mining="batch_hard")(anchor, positive, negative).backward()
    assert anchor.grad is not None and anchor.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="margin"):
        TripletLoss(margin=-0.1)


def test_pairwise_distance_matches_cdist() -> None:
    x, y, _ = batch(seed=3)
    assert torch.allclose(pairwise_distance(x, y, "l2"), torch.cdist(x, y), atol=1e-9)
    assert torch.allclose(pairwise_distance(x, y, "squared_l2"), torch.cdist(x, y) ** 2, atol=1e-9)


@pytest.mark.parametrize("mining", ["none", "semi_hard", "batch_hard"])
@pytest.mark.parametrize("symmetric", [False, True])
def test_per_triplet_losses_ignore_mining_and_batching(mining: str, symmetric: bool) -> None:
    """The evaluation loss: each triplet with its own negative, whatever the batches."""
    anchor, positive, negative = batch(seed=3, size=8)
    loss = TripletLoss(margin=0.3, mining=mining, symmetric=symmetric)  # type: ignore[arg-type]
    plain = TripletLoss(margin=0.3, symmetric=symmetric)
    per_triplet = loss.per_triplet(anchor, positive, negative)
    assert per_triplet.shape == (8,)
    for row in range(8):  # one triplet at a time: no other image to mine
        one = plain(anchor[row : row + 1], positive[row : row + 1], negative[row : row + 1])
        assert per_triplet[row].item() == pytest.approx(one.item())
    halves = torch.cat([loss.per_triplet(*(t[:3] for t in batch(3, 8))),
                        loss.per_triplet(*(t[3:] for t in batch(3, 8)))])  # fmt: skip
    torch.testing.assert_close(halves, per_triplet)


@pytest.mark.parametrize("mining", ["batch_hard", "semi_hard"])
def test_a_group_mate_is_never_mined_as_a_negative(mining: str) -> None:
    """Anchor 0's hardest in-batch candidate is the positive of pair 1, a variant of its own
    group: with group ids it is left out, with pair ids it is taken."""
    anchor = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 9.0]], dtype=torch.float64)
    positive = torch.tensor([[1.0, 0.0], [1.05, 0.0], [0.0, 8.0]], dtype=torch.float64)
    negative = torch.tensor([[9.0, 9.0], [9.0, 8.0], [8.0, 9.0]], dtype=torch.float64)
    pairs, groups = torch.tensor([0, 1, 2]), torch.tensor([7, 7, 8])  # pairs 0 and 1: one group
    outside = torch.tensor([-1, -1, -1])  # the given negatives come from outside the batch
    loss = TripletLoss(margin=0.3, mining=mining)
    by_group = loss.per_anchor(anchor, positive, negative, groups, outside)
    by_pair = loss.per_anchor(anchor, positive, negative, pairs, outside)
    # Brute force for anchor 0: d(a,p) = 1; candidates other than its own pair's images.
    candidates = {1: [anchor[1], positive[1]], 2: [anchor[2], positive[2]], -1: list(negative)}

    def expected(allowed: list[int]) -> float:
        distances = [distance(anchor[0], c, "squared_l2") for k in allowed for c in candidates[k]]
        if mining == "batch_hard":
            d_an = min(distances)
        else:
            farther = [d for d in distances if d > 1.0]
            d_an = min(farther) if farther else max(distances)
        return term(1.0, d_an, 0.3, soft=False)

    assert by_pair[0].item() == pytest.approx(expected([1, 2, -1]))  # mined: pair 1's positive
    assert by_group[0].item() == pytest.approx(expected([2, -1]))  # pair 1 left out
    assert by_pair[0] > by_group[0]


def test_an_anchor_with_only_group_mates_in_the_batch_keeps_its_given_negative() -> None:
    anchor, positive, negative = batch(seed=3, size=3)
    one_group = torch.tensor([4, 4, 4])
    loss = TripletLoss(margin=0.3, mining="batch_hard")
    mined = loss.per_anchor(anchor, positive, negative, one_group, one_group)
    given = TripletLoss(margin=0.3).per_triplet(anchor, positive, negative)
    assert torch.allclose(mined, given)


def brute_force_infonce(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    groups: list[int],
    negative_groups: list[int],
    temperature: float,
    remembered: list[tuple[torch.Tensor, int]] = (),  # type: ignore[assignment]
) -> float:
    """InfoNCE written out image by image: each of the 2B images against its partner and
    every image of the batch (and remembered embedding) outside its own group."""
    images = [*anchor, *positive, *negative, *(e for e, _ in remembered)]
    image_groups = [*groups, *groups, *negative_groups, *(g for _, g in remembered)]
    batch, total = len(anchor), 0.0
    for query in range(2 * batch):
        partner = (query + batch) % (2 * batch)

        def similarity(other: int, query: int = query) -> float:
            a, b = images[query].double(), images[other].double()
            return float(a @ b / (a.norm() * b.norm())) / temperature

        negatives = [
            other
            for other in range(len(images))
            if other not in (query, partner) and image_groups[other] != image_groups[query]
        ]
        positive_term = math.exp(similarity(partner))
        denominator = positive_term + sum(math.exp(similarity(n)) for n in negatives)
        total += -math.log(positive_term / denominator)
    return total / (2 * batch)


@pytest.mark.parametrize("temperature", [0.05, 0.5])
def test_infonce_matches_brute_force(temperature: float) -> None:
    generator = torch.Generator().manual_seed(3)
    anchor, positive, negative = torch.randn(3, 6, 5, generator=generator)
    # pairs 0, 1 and 2 are one group; a given negative from that group and one from group 4.
    groups = [0, 0, 0, 3, 4, 5]
    negative_groups = [4, 0, 9, 9, 3, 7]
    loss = InfoNCELoss(temperature)(
        anchor, positive, negative, torch.tensor(groups), torch.tensor(negative_groups)
    )
    expected = brute_force_infonce(anchor, positive, negative, groups, negative_groups, temperature)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # Without identities every pair is its own group and the given negatives are outsiders.
    loss = InfoNCELoss(temperature)(anchor, positive, negative)
    expected = brute_force_infonce(
        anchor, positive, negative, list(range(6)), [-1] * 6, temperature
    )
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_infonce_alone_in_its_group_and_per_triplet_is_batch_free() -> None:
    anchor, positive, negative = torch.randn(3, 4, 8, generator=torch.Generator().manual_seed(1))
    loss = InfoNCELoss(0.1)
    # A batch of one group leaves each image its partner alone: zero loss, no NaN.
    alone = loss(anchor, positive, negative, torch.zeros(4, dtype=torch.long),
                 torch.zeros(4, dtype=torch.long))  # fmt: skip
    assert alone.item() == 0.0
    whole = loss.per_triplet(anchor, positive, negative)
    halves = torch.cat([loss.per_triplet(anchor[:2], positive[:2], negative[:2]),
                        loss.per_triplet(anchor[2:], positive[2:], negative[2:])])  # fmt: skip
    torch.testing.assert_close(whole, halves)
    s_ap = torch.nn.functional.cosine_similarity(anchor, positive)
    s_an = torch.nn.functional.cosine_similarity(anchor, negative)
    by_hand = -torch.log(torch.exp(s_ap / 0.1) / (torch.exp(s_ap / 0.1) + torch.exp(s_an / 0.1)))
    torch.testing.assert_close(whole, by_hand)
    with pytest.raises(ValueError, match="temperature"):
        InfoNCELoss(0)


def brute_force_batch_hard(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    groups: list[int],
    remembered: list[tuple[torch.Tensor, int]],
    margin: float,
) -> float:
    """Batch-hard mining written out: each anchor's closest image of another group among the
    batch's anchors, positives, given negatives (outside the batch's groups) and memory."""
    candidates = [*zip(anchor, groups, strict=True), *zip(positive, groups, strict=True)]
    candidates += [(n, -1) for n in negative]
    candidates += remembered
    total = 0.0
    for index, a in enumerate(anchor):
        d_ap = distance(a, positive[index], "squared_l2")
        d_an = min(distance(a, c, "squared_l2") for c, g in candidates if g != groups[index])
        total += term(d_ap, d_an, margin, soft=False)
    return total / len(anchor)


@pytest.mark.parametrize("kind", ["infonce", "batch_hard"])
def test_the_cross_batch_memory_matches_its_definition(kind: str) -> None:
    """Over six steps with a memory of 7 (batches of 4 pairs: the oldest step leaves in part)
    used from step 2: each step's loss equals the brute force with, as extra negatives, the
    last 7 positives of the steps before (none before step 2), their groups left out."""
    size, start, margin, temperature = 7, 2, 0.5, 0.2
    memory = CrossBatchMemory(size, start)
    loss = (
        InfoNCELoss(temperature, memory)
        if kind == "infonce"
        else TripletLoss(margin, mining="batch_hard", memory=memory)
    )
    generator = torch.Generator().manual_seed(5)
    pushed: list[tuple[torch.Tensor, int]] = []
    for step in range(6):
        anchor, positive, negative = torch.randn(3, 4, 5, generator=generator, dtype=torch.float64)
        groups = [step % 3 * 10 + pair for pair in (0, 1, 2, 2)]  # groups come back each step
        remembered = pushed[-size:] if step >= start else []
        value = loss(anchor, positive, negative, torch.tensor(groups), torch.full((4,), -1))
        if kind == "infonce":
            args = (groups, [-1] * 4, temperature, remembered)
            expected = brute_force_infonce(anchor, positive, negative, *args)
        else:
            expected = brute_force_batch_hard(
                anchor, positive, negative, groups, remembered, margin
            )
        assert value.item() == pytest.approx(expected, rel=1e-9), step
        pushed += list(zip(positive, groups, strict=True))
    assert memory.filled == size and memory.steps == 6
    # Evaluation takes nothing; a checkpoint's state gives the same memory back.
    loss.eval()
    loss(anchor, positive, negative, torch.tensor(groups))
    assert memory.steps == 6
    with pytest.raises(ValueError, match="needs group_ids"):  # positions are no identities
        loss(anchor, positive, negative)
    copy = CrossBatchMemory(size, start)
    copy.load_state_dict(memory.state_dict(), torch.device("cpu"))
    assert copy.entries() is not None and memory.entries() is not None
    for ours, theirs in zip(copy.entries(), memory.entries(), strict=True):
        assert torch.equal(ours, theirs)
    with pytest.raises(ConfigError, match="memory_size 7"):
        CrossBatchMemory(8).load_state_dict(memory.state_dict(), torch.device("cpu"))
    with pytest.raises(ConfigError, match="needs InfoNCE or mining"):
        TripletLoss(memory=CrossBatchMemory(4))
