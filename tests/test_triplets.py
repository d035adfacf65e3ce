"""Negatives: never the anchor's pair, never another split, redrawn per epoch, fixed for eval."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_siamese.data.negatives import draw_negatives
from lightning_siamese.data.pairs import Pair
from lightning_siamese.data.sampling import TripletSampler
from lightning_siamese.data.transforms import eval_transform
from lightning_siamese.data.triplets import TripletDataset


def groups_of(count: int, group_size: int) -> list[str]:
    return [f"g{i // group_size}" for i in range(count)]


def test_negatives_avoid_the_anchor_pair_and_its_group() -> None:
    groups = groups_of(50, group_size=5)
    for seed in range(20):
        negatives = draw_negatives(groups, seed)
        for anchor, image in enumerate(negatives):
            assert 0 <= image < 2 * len(groups)
            assert image // 2 != anchor
            assert groups[image // 2] != groups[anchor]


def test_one_group_split_still_never_uses_the_anchor_pair() -> None:
    negatives = draw_negatives(["same"] * 3, seed=0)
    assert all(image // 2 != anchor for anchor, image in enumerate(negatives))


def test_both_sides_serve_as_negatives() -> None:
    negatives = draw_negatives(groups_of(200, 1), seed=1)
    assert {image % 2 for image in negatives} == {0, 1}


def test_eval_negatives_are_fixed_by_the_seed() -> None:
    groups = groups_of(40, 1)
    assert draw_negatives(groups, "val:0") == draw_negatives(groups, "val:0")
    assert draw_negatives(groups, "val:0") != draw_negatives(groups, "val:1")


def test_training_negatives_are_redrawn_every_epoch() -> None:
    sampler = TripletSampler(groups_of(60, 1), seed=0)
    sampler.set_epoch(0)
    epoch0 = list(sampler)
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    sampler.set_epoch(0)
    assert list(sampler) == epoch0  # deterministic for (seed, epoch)
    assert {k.anchor: k.negative for k in epoch0} != {k.anchor: k.negative for k in epoch1}
    assert sorted(k.anchor for k in epoch0) == list(range(60))  # a permutation
    assert all(k.negative // 2 != k.anchor for k in epoch0 + epoch1)
    assert len({k.augment_seed for k in epoch0 + epoch1}) == 120


@pytest.mark.parametrize("replicas", [2, 3])
def test_processes_share_one_draw_of_the_epoch(replicas: int) -> None:
    """Every process takes its share of the one order of (seed, epoch): a step's batches over
    all processes are the single process's batch of ``replicas`` times the size."""
    groups = groups_of(50, 1)
    whole = TripletSampler(groups, seed=4)
    whole.set_epoch(3)
    shards = []
    for rank in range(replicas):
        sampler = TripletSampler(groups, seed=4, num_replicas=replicas, rank=rank)
        sampler.set_epoch(3)
        shards.append(list(sampler))
        assert len(sampler) == len(shards[-1]) == 50 // replicas
    single = list(whole)
    batch = 4
    for step in range(50 // replicas // batch):
        together = sorted(k for shard in shards for k in shard[step * batch : (step + 1) * batch])
        expected = single[step * batch * replicas : (step + 1) * batch * replicas]
        assert together == sorted(expected)


def test_a_pass_can_start_part_way_through_an_epoch() -> None:
    groups = groups_of(40, 1)
    sampler = TripletSampler(groups, seed=1, num_replicas=2, rank=1)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_epoch(0)
    sampler.start_at(2, samples=8)  # 8 anchors over both processes: 4 of this one's
    assert list(sampler) == full[4:]
    assert list(sampler) == list(TripletSampler(groups, seed=1, num_replicas=2, rank=1))


def test_items_hold_three_images_from_the_split(pair_folder: Path) -> None:
    from lightning_siamese.data.pairs import discover_pairs

    pairs: list[Pair] = discover_pairs(pair_folder).pairs[:5]
    dataset = TripletDataset(pairs, eval_transform(24), negatives=draw_negatives(["a"] * 5, 0))
    item = dataset[2]
    assert item["index"] == 2 and item["negative_index"] // 2 != 2
    for key in ("anchor", "positive", "negative"):
        assert item[key].shape == (3, 24, 24) and item[key].dtype == torch.float32
    assert dataset.image_path(item["negative_index"]) in {p.left for p in pairs} | {
        p.right for p in pairs
    }
    assert dataset[(1, 6)]["negative_index"] == 6


def test_group_mates_are_negatives_only_when_allowed(pair_folder: Path) -> None:
    from lightning_siamese.data.negatives import negative_groups
    from lightning_siamese.data.pairs import discover_pairs

    pairs = [
        Pair(p.name, p.left, p.right, f"g{i // 4}")
        for i, p in enumerate(discover_pairs(pair_folder).pairs[:20])
    ]
    strict = TripletDataset(pairs, eval_transform(16))
    assert strict.groups == [pair.group for pair in pairs]
    assert strict.group_ids == [i // 4 for i in range(20)]
    for anchor, negative, *_ in TripletSampler(strict.groups, seed=0):
        assert pairs[negative // 2].group != pairs[anchor].group
    item = strict[(0, 3)]  # pair 1 as pair 0's negative: the same group, number 0
    assert (item["group_id"], item["negative_group_id"]) == (0, 0)

    mates = negative_groups(pairs, group_mates_as_negatives=True)
    assert mates == [pair.name for pair in pairs]
    loose = TripletDataset(pairs, eval_transform(16), group_mates_as_negatives=True)
    assert loose.group_ids == list(range(20))
    drawn = [
        pairs[negative // 2].group == pairs[anchor].group
        for seed in range(5)
        for anchor, negative, *_ in TripletSampler(loose.groups, seed=seed)
    ]
    assert any(drawn)  # group-mates do come up
    assert all(n // 2 != a for a, n, *_ in TripletSampler(loose.groups, seed=0))


def test_one_group_splits_and_replacement_negatives_follow_the_rule(pair_folder: Path) -> None:
    import random
    import warnings

    from lightning_siamese.data.negatives import draw_negative, negative_groups
    from lightning_siamese.data.pairs import discover_pairs

    found = discover_pairs(pair_folder).pairs[:6]
    one_group = [Pair(p.name, p.left, p.right, "same") for p in found]
    assert negative_groups(one_group) == [p.name for p in one_group]  # another pair will do
    assert draw_negative(random.Random(0), 0, ["a", "a", "a"]) // 2 in (1, 2)  # no endless loop

    groups = [Pair(p.name, p.left, p.right, f"g{i // 2}") for i, p in enumerate(found)]
    dataset = TripletDataset(groups, eval_transform(16))
    groups[0].left.write_bytes(b"gone bad")  # pair 0 cannot be read: pair 1 takes its place
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        item = dataset[(0, 3)]  # the given negative: pair 1, the replacement's own pair
    assert item["index"] == 1
    assert groups[item["negative_index"] // 2].group != groups[1].group


def test_the_training_loader_saves_its_place_and_refuses_another_process_count() -> None:
    from lightning_siamese.data.sampling import ResumableLoader
    from lightning_siamese.errors import ConfigError

    groups = groups_of(40, 1)
    pairs = [Pair(f"p{i}", Path(), Path(), f"p{i}") for i in range(40)]
    dataset = TripletDataset(pairs, eval_transform(8)).without_images()  # numbers only
    place = [(3, 2, 5)]  # epoch 3, 2 of its 5 batches done

    def loader(replicas: int) -> ResumableLoader:
        sampler = TripletSampler(groups, seed=2, num_replicas=replicas, rank=0)
        return ResumableLoader(dataset, batch_size=4, sampler=sampler, progress=lambda: place[0])

    two = loader(2)
    assert two.state_dict() == {"epoch": 3, "samples": 16, "replicas": 2}
    whole = loader(2)
    whole.sampler.set_epoch(3)
    expected = [
        b["index"].tolist() for b in torch.utils.data.DataLoader(dataset, 4, sampler=whole.sampler)
    ]
    assert [b["index"].tolist() for b in two] == expected[2:]  # the rest of epoch 3
    place[0] = (3, 5, 5)  # the epoch is over: the next starts
    assert two.state_dict() == {"epoch": 4, "samples": 0, "replicas": 2}
    resumed = loader(2)
    resumed.load_state_dict({"epoch": 3, "samples": 16, "replicas": 2})
    assert [b["index"].tolist() for b in resumed] == expected[2:]
    with pytest.raises(ConfigError, match="by 2 process"):
        loader(1).load_state_dict({"epoch": 3, "samples": 16, "replicas": 2})
    loader(1).load_state_dict({"epoch": 4, "samples": 0, "replicas": 2})  # an epoch's end
