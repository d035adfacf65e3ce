"""The frozen part with its batch norms folded: the network's features from a copy that runs
fewer layers, the network left as it was, and the network's own pass wherever folding does
not apply or the copy disagrees."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_siamese.models import folding
from lightning_siamese.models.embedding import EmbeddingNet
from lightning_siamese.models.folding import FoldedFrozenPart


def resnet(freeze: str = "layer3.1") -> EmbeddingNet:
    torch.manual_seed(0)
    net = EmbeddingNet(backbone="resnet18", weights="none", freeze=freeze, image_size=32)
    for module in net.modules():  # statistics and scales far from the identity of a fresh BN
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.5, 0.5)
    return net.train()  # as during fit: the frozen units stay in eval mode


def images(count: int = 5) -> torch.Tensor:
    return torch.randn(count, 3, 32, 32, generator=torch.Generator().manual_seed(2))


def test_folded_copy_gives_the_networks_features_with_no_batch_norm_left() -> None:
    net = resnet()
    before = {name: value.clone() for name, value in net.state_dict().items()}
    # resnet18 up to layer3.1: bn1, 2 + 2 in each of layer1..3, and the downsample's of layer2
    # and layer3: 15 batch norms, each right after a convolution.
    folded = FoldedFrozenPart.of(net, log=pytest.fail)
    assert folded is not None and folded.folded == 15
    assert not [m for m in folded.modules() if isinstance(m, nn.BatchNorm2d)]
    batch = images().requires_grad_()
    got = folded(batch)
    with torch.no_grad():
        want = net.forward_frozen(batch)
    assert folded.state == "folded" and not got.requires_grad  # no graph kept for a cache
    assert got.shape == want.shape
    assert ((got - want).norm() / want.norm()).item() < 1e-5
    for name, value in net.state_dict().items():  # the network itself is untouched
        assert torch.equal(value, before[name]), name
    assert all(p.requires_grad for p in net.head.parameters())


def test_units_fx_cannot_trace_together_fold_one_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    net = resnet()
    fuse = folding._fused
    monkeypatch.setattr(  # as if fx could not trace the units as one sequence
        folding,
        "_fused",
        lambda module: None if isinstance(module, nn.Sequential) else fuse(module),
    )
    folded = FoldedFrozenPart.of(net, log=pytest.fail)
    # bn1 is a unit of its own after the unit conv1: those two stay apart, 14 of 15 fold
    assert folded is not None and folded.folded == 14
    batch = images()
    with torch.no_grad():
        want = net.forward_frozen(batch)
    got = folded(batch)
    assert ((got - want).norm() / want.norm()).item() < 1e-5


def test_nothing_folds_where_there_is_nothing_to_fold() -> None:
    # timm's EfficientNet-Lite: BatchNormAct2d, its activation inside: not a plain batch norm.
    lite = EmbeddingNet(
        backbone="timm/tf_efficientnet_lite0", weights="none", freeze="blocks.1.1", image_size=32
    )
    assert FoldedFrozenPart.of(lite) is None
    assert FoldedFrozenPart.of(resnet(freeze="none")) is None  # no frozen part
    held_in_bf16 = resnet().to(torch.bfloat16)  # bf16-true: folding would round the weights
    assert FoldedFrozenPart.of(held_in_bf16) is None


def test_a_copy_that_disagrees_gives_way_to_the_networks_pass() -> None:
    net = resnet()
    notes: list[str] = []
    folded = FoldedFrozenPart.of(net, log=notes.append)
    assert folded is not None
    folded.units = nn.Sequential(folded.units, nn.Hardtanh(-0.5, 0.5))  # a fold gone wrong
    batch = images()
    got = folded(batch)
    with torch.no_grad():
        want = net.forward_frozen(batch)
    assert folded.state == "reference" and torch.equal(got, want)
    assert len(notes) == 1 and "folded batch norms differ from the network by" in notes[0]
    assert torch.equal(folded(batch), want) and len(notes) == 1  # checked once
