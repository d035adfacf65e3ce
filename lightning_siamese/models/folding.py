"""The frozen part of an embedding network with its batch norms folded into the convolutions
before them: the same function in fewer passes over memory, for passes that only read it.

Pure torch. A frozen unit runs in eval mode, so each ``Conv2d -> BatchNorm2d`` pair is one
affine map, and folding the batch norm into the convolution's weights and bias saves the
batch norm's pass over every feature map (``torch.fx``'s ``fuse``, as TorchScript's freeze and
inductor's freezing do, without their set-up). Measured on ``configs/ttl.yaml``'s frozen
ResNet50 on 2 CPU cores by ``benchmarks/layer_rates.py`` (``docs/benchmarks.md`` b).

Only an exact ``nn.BatchNorm2d`` right after a ``Conv2d`` whose output nothing else reads is
counted and built for (``fuse`` also folds 1-d and 3-d pairs; timm's ``BatchNormAct2d``, with
its activation inside, is left as it is); a network ``torch.fx`` cannot trace folds unit by
unit, or not at all. The copy is checked against the network's own frozen pass on the first
call's images (at most :data:`CHECKED_IMAGES`), and that pass takes over for good if they
differ.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Literal

import torch
from torch import nn
from torch.fx.experimental.optimization import fuse

from lightning_siamese.models.embedding import EmbeddingNet
from lightning_siamese.models.frozen_graph import (
    LOW_PRECISION_TOLERANCE,
    TOLERANCE,
    relative_difference,
)

#: Images of the first batch compared between the folded copy and the network's own pass.
CHECKED_IMAGES = 2


def plain_batch_norms(module: nn.Module) -> int:
    """How many exact ``nn.BatchNorm2d`` modules ``module`` holds."""
    return sum(type(child) is nn.BatchNorm2d for child in module.modules())


def _fused(module: nn.Module) -> nn.Module | None:
    try:
        return fuse(module, inplace=True)  # the callers pass copies
    except Exception:  # fx cannot trace it (control flow on values, an unsupported call)
        return None


class FoldedFrozenPart(nn.Module):
    """A copy of ``net``'s frozen units in eval mode, batch norms folded, run without autograd
    as ``net.forward_frozen`` runs them (channels-last input where the network uses it).
    Build it with :meth:`of`, which gives None where nothing would fold.

    Args:
        net: the network whose frozen part to copy (left as it is).
        units: its frozen units, copied and folded.
        folded: how many batch norms were folded.
        log: where a failed check's note goes.
    """

    def __init__(
        self,
        net: EmbeddingNet,
        units: nn.Module,
        folded: int,
        log: Callable[[str], None] = print,
    ) -> None:
        super().__init__()
        self.units = units
        self.folded = folded
        self.channels_last = net.channels_last
        self.log = log
        # The network's own pass, kept as a plain attribute (not a registered submodule).
        self.reference: Callable[[torch.Tensor], torch.Tensor] = net.forward_frozen
        #: ``unchecked`` until the first call, then ``folded``, or ``reference`` where the
        #: check failed and the network's own pass runs.
        self.state: Literal["unchecked", "folded", "reference"] = "unchecked"

    @classmethod
    def of(cls, net: EmbeddingNet, log: Callable[[str], None] = print) -> FoldedFrozenPart | None:
        """The folded copy of ``net``'s frozen part, or None when it has no plain batch norm to
        fold, a unit that is a method (a ViT's position embedding), or weights that are not
        float32 (folding in bfloat16 would round the folded weights)."""
        names = net.units[: net.frozen_units]
        if not names or any(name.startswith("_") for name in names):
            return None
        parts = [net.backbone.get_submodule(name) for name in names]
        if any(p.dtype != torch.float32 for part in parts for p in part.parameters()):
            return None
        before = sum(plain_batch_norms(part) for part in parts)
        if not before:
            return None
        copies = [copy.deepcopy(part).eval() for part in parts]
        units = _fused(nn.Sequential(*copies))
        if units is None:  # unit by unit: a pair split across two units stays unfolded
            # (a unit that is one layer is left as it is: traced alone, a batch norm would
            # turn into a function call and look folded)
            units = nn.Sequential(
                *((_fused(part) if list(part.children()) else None) or part for part in copies)
            )
        folded = before - plain_batch_norms(units)
        if folded <= 0:
            return None
        if net.channels_last:
            units = units.to(memory_format=torch.channels_last)
        for parameter in units.parameters():
            parameter.requires_grad_(False)
        return cls(net, units, folded, log)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.state == "unchecked":
            self._check(images[:CHECKED_IMAGES])
        if self.state == "reference":
            return self.reference(images)
        return self._run(images)

    def _run(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            return self.units(images)

    def _check(self, sample: torch.Tensor) -> None:
        want, got = self.reference(sample), self._run(sample)
        tolerance = TOLERANCE.get(want.dtype, LOW_PRECISION_TOLERANCE)
        same = got.shape == want.shape and got.dtype == want.dtype
        difference = relative_difference(got, want) if same else float("inf")
        if difference <= tolerance:
            self.state = "folded"
            return
        self.state = "reference"
        self.log(
            f"folded batch norms differ from the network by {difference:.1e} (tolerance "
            f"{tolerance:.0e}); running the network's own frozen pass"
        )
