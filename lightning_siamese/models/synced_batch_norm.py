"""BatchNorm over every process's batch (synchronised BatchNorm) for the trained layers. Pure torch.

Under DDP each process sees its share of the global batch; a plain BatchNorm layer in training
mode normalises over that share, so N processes do not train as one process with the whole
batch would. :func:`sync_batch_norm` turns the trained BatchNorm layers of a network into
layers whose training-mode statistics (mean and variance per channel) are summed over the
processes, with gradients through them (as ``torch.nn.SyncBatchNorm``, which runs on CUDA only;
this one runs wherever the process group does, gloo on CPU included). In eval mode, or with one
process, a layer computes exactly what it did. Layers in eval mode (frozen) are never touched:
they use their running statistics.

The layers keep their class's state (same parameter and buffer names, checkpoints load either
way), including timm's ``BatchNormAct2d`` (normalisation, then its dropout and activation).
"""

from __future__ import annotations

import torch
from torch import nn

from lightning_siamese.models.across_processes import all_reduce_sum, world

#: Classes whose forward is the plain batch norm (then, for timm's, ``drop`` and ``act``).
SUPPORTED = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
TIMM_SUPPORTED = "BatchNormAct2d"


class _Synced(nn.Module):
    """Mixed in before a BatchNorm class: its training-mode forward over every process."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert isinstance(self, nn.modules.batchnorm._BatchNorm)
        if not self.training or world()[0] == 1:
            return super().forward(x)
        y = global_batch_norm(self, x)
        for name in ("drop", "act"):  # timm's BatchNormAct2d
            post = getattr(self, name, None)
            if isinstance(post, nn.Module):
                y = post(y)
        return y


_CLASSES: dict[type, type] = {}


def synced_class(cls: type) -> type:
    """The synchronised subclass of a BatchNorm class (one per class)."""
    if cls not in _CLASSES:
        name = f"Synced{cls.__name__}"
        synced = type(name, (_Synced, cls), {"__module__": __name__, "__qualname__": name})
        globals()[name] = synced  # found by name: a model holding it pickles
        _CLASSES[cls] = synced
    return _CLASSES[cls]


def global_batch_norm(layer: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """The layer's training-mode batch norm of ``x`` with statistics over every process's
    batch (two passes: the mean, then the squared deviations), and its running statistics
    updated from them as one process with the whole batch would."""
    dims = [0, *range(2, x.dim())]
    shape = [1, -1] + [1] * (x.dim() - 2)
    values = x.to(torch.promote_types(x.dtype, torch.float32))  # bf16/fp16 in float32
    count = torch.tensor([values.numel() / values.shape[1]], dtype=values.dtype, device=x.device)
    sums = all_reduce_sum(torch.cat([values.sum(dims), count]))
    total = sums[-1]
    mean = sums[:-1] / total
    centred = values - mean.view(shape)
    variance = all_reduce_sum(centred.pow(2).sum(dims)) / total
    y = centred * torch.rsqrt(variance + layer.eps).view(shape)
    if layer.affine:
        y = y * layer.weight.view(shape) + layer.bias.view(shape)
    if layer.track_running_stats and layer.running_mean is not None:
        _update_running(layer, mean.detach(), variance.detach(), total.detach())
    return y.to(x.dtype)


@torch.no_grad()
def _update_running(
    layer: nn.modules.batchnorm._BatchNorm,
    mean: torch.Tensor,
    variance: torch.Tensor,
    n: torch.Tensor,
) -> None:
    assert layer.running_mean is not None and layer.running_var is not None
    factor = 0.0 if layer.momentum is None else layer.momentum
    if layer.num_batches_tracked is not None:
        layer.num_batches_tracked.add_(1)
        if layer.momentum is None:  # a cumulative average
            factor = 1.0 / float(layer.num_batches_tracked)
    unbiased = variance * n / (n - 1).clamp_min(1)  # tensors: no wait for the device
    layer.running_mean.lerp_(mean.to(layer.running_mean.dtype), factor)
    layer.running_var.lerp_(unbiased.to(layer.running_var.dtype), factor)


def sync_batch_norm(network: nn.Module, frozen: set[nn.Module]) -> list[str]:
    """Make every BatchNorm layer of ``network`` outside the ``frozen`` modules synchronised,
    in place; returns the names of BatchNorm layers of other classes, left per process."""
    skipped = []
    for name, module in network.named_modules():
        if module in frozen or not isinstance(module, nn.modules.batchnorm._BatchNorm):
            continue
        if isinstance(module, (_Synced, nn.SyncBatchNorm)):
            continue
        if type(module) not in SUPPORTED and type(module).__name__ != TIMM_SUPPORTED:
            skipped.append(f"{name} ({type(module).__name__})")
            continue
        module.__class__ = synced_class(type(module))
    return skipped
