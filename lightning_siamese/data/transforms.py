"""Train and eval transform presets: PIL RGB image -> normalised float tensor."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image
from torchvision.transforms import v2

# The Keras example fed ResNet50 raw 0..255 pixels (it forgot `preprocess_input`); we normalise.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Transform = Callable[[Image.Image], torch.Tensor]


def eval_transform(
    image_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Transform:
    """Deterministic: square resize (as the Keras example's ``load_img(target_size=...)``),
    normalise."""
    return v2.Compose(
        [
            v2.PILToTensor(),
            v2.Resize((image_size, image_size), antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(mean), list(std)),
        ]
    )


def train_transform(
    image_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    augment: bool = False,
) -> Transform:
    """The eval transform, or with ``augment`` a mild random crop, flip and colour jitter."""
    if not augment:
        return eval_transform(image_size, mean, std)
    return v2.Compose(
        [
            v2.PILToTensor(),
            v2.RandomResizedCrop((image_size, image_size), scale=(0.7, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(mean), list(std)),
        ]
    )


def denormalize(
    images: torch.Tensor,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """Undo :func:`eval_transform`'s normalisation: (..., 3, H, W) -> values in [0, 1]."""
    mean_t = torch.tensor(mean, dtype=images.dtype, device=images.device).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=images.dtype, device=images.device).view(3, 1, 1)
    return (images * std_t + mean_t).clamp(0, 1)
