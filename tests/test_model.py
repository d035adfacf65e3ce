"""SiameseModel: the frozen-feature cache is exact; optimisers are injectable."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from conftest import tiny_model
from lightning_siamese.data.negatives import draw_negatives
from lightning_siamese.data.pairs import discover_pairs
from lightning_siamese.data.transforms import eval_transform
from lightning_siamese.data.triplets import TripletDataset


def a_batch(folder: Path) -> dict:
    pairs = discover_pairs(folder).pairs[:6]
    dataset = TripletDataset(pairs, eval_transform(32), draw_negatives(["g"] * 6, 0))
    items = [dataset[i] for i in range(6)]
    return torch.utils.data.default_collate(items)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_cached_frozen_features_give_identical_losses_and_gradients(pair_folder: Path) -> None:
    torch.manual_seed(0)
    # Contiguous layout: bit-identical whatever the batch the frozen part ran in (channels-last
    # kernels may differ by ~1e-6 between batch sizes; tests/test_feature_cache.py covers that).
    plain = tiny_model(freeze="layer3.1", mining="batch_hard", channels_last=False)
    cached = tiny_model(
        freeze="layer3.1", mining="batch_hard", cache_frozen_features=True, channels_last=False
    )
    cached.load_state_dict(plain.state_dict())
    batch = a_batch(pair_folder)
    reference = plain.training_step(batch, 0)
    reference.backward()
    frozen_rows = []
    forward_frozen = cached.net.forward_frozen

    def counting(images: torch.Tensor) -> torch.Tensor:
        frozen_rows.append(len(images))
        return forward_frozen(images)

    cached.net.forward_frozen = counting  # type: ignore[method-assign]
    images = set(range(12)) | set(batch["negative_index"].tolist())  # keys: 2 * pair + side
    for step in range(2):  # the first pass fills the cache, the second reads it
        cached.zero_grad()
        loss = cached.training_step(batch, 0)
        loss.backward()
        assert torch.equal(loss, reference), step
        for (name, p), q in zip(plain.named_parameters(), cached.parameters(), strict=True):
            if p.grad is not None:
                assert torch.allclose(p.grad, q.grad, atol=1e-7), (step, name)
        # Each distinct image ran through the frozen part once, in the first pass only.
        assert frozen_rows == [len(images)], step
    assert set(cached.feature_memos["train"].features) == images


def test_optimizer_is_injectable_and_defaults_to_adam() -> None:
    default = tiny_model().configure_optimizers()
    assert isinstance(default, torch.optim.Adam)
    assert default.param_groups[0]["lr"] == 1e-4
    assert default.param_groups[0]["fused"] is True  # every parameter is on the CPU
    sgd = functools.partial(torch.optim.SGD, lr=0.5)
    scheduler = functools.partial(torch.optim.lr_scheduler.StepLR, step_size=3)
    config = tiny_model(optimizer=sgd, scheduler=scheduler).configure_optimizers()
    assert isinstance(config["optimizer"], torch.optim.SGD)
    assert isinstance(config["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.StepLR)
    frozen = {id(p) for p in tiny_model().parameters() if not p.requires_grad}
    assert not frozen & {id(p) for p in default.param_groups[0]["params"]}
