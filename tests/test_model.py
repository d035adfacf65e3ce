"""SiameseModel: batches of features train as batches of images; optimisers are injectable."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from conftest import tiny_model
from lightning_siamese.data.images import load_image
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
def test_a_batch_of_features_gives_the_images_losses_and_gradients(pair_folder: Path) -> None:
    """What the data module serves with the frozen-feature cache (numbers and ``features``, no
    image) trains the model as the images do."""
    torch.manual_seed(0)
    # Contiguous layout: bit-identical whatever the batch the frozen part ran in (channels-last
    # kernels may differ by ~1e-6 between batch sizes; tests/test_feature_cache.py covers that).
    model = tiny_model(freeze="layer3.0", mining="batch_hard", channels_last=False)
    batch = a_batch(pair_folder)
    reference = model.training_step(batch, 0)
    reference.backward()
    gradients = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    assert gradients and not any(p.grad is not None for p in model.net.backbone.layer1.parameters())

    # The features of the images read from their files in the rows the cache gives them.
    pairs = discover_pairs(pair_folder).pairs[:6]
    dataset = TripletDataset(pairs, eval_transform(32), draw_negatives(["g"] * 6, 0))
    numbers = dataset.without_images()
    files = [p.left for p in pairs] + [p.right for p in pairs]
    files += [dataset.image_path(int(j)) for j in batch["negative_index"]]
    images = torch.stack([dataset.transform(load_image(path)) for path in files])
    features = model.net.forward_frozen(images)
    served = torch.utils.data.default_collate([numbers[i] for i in range(6)])
    assert "anchor" not in served
    model.zero_grad()
    loss = model.training_step({**served, "features": features}, 0)
    loss.backward()
    assert torch.equal(loss, reference)
    for name, p in model.named_parameters():
        if name in gradients:
            torch.testing.assert_close(p.grad, gradients[name], rtol=0, atol=1e-7, msg=name)


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


def test_a_one_cycle_schedule_must_span_the_fit() -> None:
    """Stepped once an epoch, a one-cycle schedule of 10 steps fails at epoch 11: refused up
    front for a longer fit, a warning for a shorter one (its learning rate never comes down)."""
    from lightning_siamese.errors import ConfigError
    from lightning_siamese.training.optimizers import check_one_cycle

    weight = torch.nn.Parameter(torch.zeros(2))
    cycle = torch.optim.lr_scheduler.OneCycleLR(
        torch.optim.Adam([weight]), max_lr=1e-3, total_steps=10
    )
    with pytest.raises(ConfigError, match=r"total_steps 20 \(= --trainer.max_epochs\)"):
        check_one_cycle(cycle, 20)
    with pytest.warns(UserWarning, match="ends before the learning rate comes down"):
        check_one_cycle(cycle, 2)
    for fine in (10, None, -1):  # as long as the fit; no epoch limit set
        check_one_cycle(cycle, fine)
    check_one_cycle(torch.optim.lr_scheduler.StepLR(torch.optim.Adam([weight]), 3), 20)
