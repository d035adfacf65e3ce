"""The model's optimizer and learning-rate schedule, from the configured callables."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from pytorch_lightning.utilities.types import LRSchedulerConfigType, OptimizerLRScheduler


def default_optimizer(parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer when none is configured: the Keras example's Adam with learning rate 1e-4, with
    fused kernels when every parameter is on the CPU or a CUDA device (on CPU the plain step
    over the Keras example's 60 M trainable parameters costs more than the backward pass)."""
    parameters = list(parameters)
    fused = all(p.device.type in ("cpu", "cuda") for p in parameters)
    return torch.optim.Adam(parameters, lr=1e-4, fused=fused)


def optimizers(
    module: torch.nn.Module,
    optimizer: OptimizerCallable | None,
    scheduler: LRSchedulerCallable | None,
) -> OptimizerLRScheduler:
    """Lightning's ``configure_optimizers`` answer: the optimizer over the trainable parameters
    (:func:`default_optimizer` when unset) and the scheduler, stepped every epoch (a plateau
    scheduler watches ``val/loss``)."""
    parameters = [p for p in module.parameters() if p.requires_grad]
    built = (optimizer or default_optimizer)(parameters)
    if scheduler is None:
        return built
    schedule = scheduler(built)
    config: LRSchedulerConfigType = {"scheduler": schedule, "interval": "epoch"}
    if isinstance(schedule, torch.optim.lr_scheduler.ReduceLROnPlateau):
        config["monitor"] = "val/loss"
    return {"optimizer": built, "lr_scheduler": config}
