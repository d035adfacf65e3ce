"""Fixed augmented views: K views per training image drawn from the data seed, each epoch one
view per image, the same tensors whether a loader reads a triplet or the cache reads a view."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import write_pairs
from lightning_siamese.data.datamodule import SiameseDataModule
from lightning_siamese.data.features import image_keys
from lightning_siamese.data.sampling import TripletSampler
from lightning_siamese.data.views import AugmentViews, ViewFilesDataset
from lightning_siamese.errors import ConfigError


def test_each_cycle_of_k_epochs_shows_every_view_of_every_image_once() -> None:
    views = AugmentViews(images=50, views=4, seed=7)
    for cycle in range(3):
        taken = [views.epoch_views(epoch) for epoch in range(4 * cycle, 4 * cycle + 4)]
        for image in range(50):
            assert sorted(epoch[image] for epoch in taken) == [0, 1, 2, 3]
    first, second = views.epoch_views(0), views.epoch_views(4)
    assert first != second, "each cycle draws its own order"
    again = AugmentViews(images=50, views=4, seed=7)  # a new process or a resumed fit
    assert [again.epoch_views(e) for e in (5, 0)] == [views.epoch_views(e) for e in (5, 0)]
    seeds = views.view_seeds()
    assert len(set(seeds)) == 200 and seeds[views.row(3, 2)] == views.view_seed(3, 2)
    assert AugmentViews(50, 4, seed=8).view_seeds() != seeds, "the data seed draws them"


def test_a_loader_s_triplet_is_the_cache_s_views(tmp_path: Path) -> None:
    root = tmp_path / "pairs"
    write_pairs(root, 12)
    data = SiameseDataModule(str(root), 32, batch_size=4, augment=True, augment_views=3)
    data.setup("fit")
    train = data.datasets["train"]
    files, transform, seeds = data.cacheable_images("train") or ((), None, None)
    assert seeds is not None and len(files) == 3 * 2 * len(train)
    cache = ViewFilesDataset(files, transform, seeds)  # type: ignore[arg-type]
    keys = TripletSampler(train.groups, seed=0, views=train.views).epoch_keys(2)
    batch = [train[key] for key in keys[:4]]
    collated = {
        "index": torch.tensor([item["index"] for item in batch]),
        "negative_index": torch.tensor([item["negative_index"] for item in batch]),
        "views": torch.stack([item["views"] for item in batch]),
    }
    rows = image_keys(collated, 2 * len(train))
    images = torch.cat(
        [torch.stack([item[k] for item in batch]) for k in ("anchor", "positive", "negative")]
    )
    for image, row in zip(images, rows.tolist(), strict=True):
        assert torch.equal(cache[row]["image"], image)
    # The views are augmentations: two views of one image differ, a view is always the same.
    count = 2 * len(train)
    assert not torch.equal(cache[0]["image"], cache[count]["image"])
    assert torch.equal(cache[count]["image"], cache[count]["image"])


@pytest.mark.parametrize(
    ("views", "augment", "words"), [(0, True, ">= 1"), (2, False, "needs --data.augment true")]
)
def test_views_need_augmentation_and_a_count(views: int, augment: bool, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        SiameseDataModule("unused", augment=augment, augment_views=views)
