"""The model's optimizer and learning-rate schedule, from the configured callables."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from pytorch_lightning.utilities import rank_zero_warn
from pytorch_lightning.utilities.types import LRSchedulerConfigType, OptimizerLRScheduler

from lightning_siamese.errors import ConfigError


def default_optimizer(parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer when none is configured: the Keras example's Adam with learning rate 1e-4, with
    fused kernels when every parameter is on the CPU or a CUDA device (on CPU the plain step
    over the Keras example's 60 M trainable parameters costs more than the backward pass)."""
    parameters = list(parameters)
    fused = all(p.device.type in ("cpu", "cuda") for p in parameters)
    return torch.optim.Adam(parameters, lr=1e-4, fused=fused)


def check_one_cycle(schedule: Any, epochs: int | None) -> None:
    """A one-cycle schedule (stepped once an epoch) must span the fit's ``epochs``: shorter, it
    would fail at its last step + 1 (a :class:`ConfigError` now instead); longer, the fit ends
    before the learning rate comes down (a warning)."""
    if not isinstance(schedule, torch.optim.lr_scheduler.OneCycleLR) or epochs is None:
        return
    steps, fix = schedule.total_steps, "--model.scheduler.init_args.total_steps"
    if epochs < 0 or steps == epochs:
        return
    if steps < epochs:
        raise ConfigError(
            f"the one-cycle learning-rate schedule has {steps} steps, one an epoch, but the fit "
            f"runs {epochs} epochs: set {fix} {epochs} (= --trainer.max_epochs)"
        )
    rank_zero_warn(
        f"the one-cycle learning-rate schedule spans {steps} epochs and the fit runs {epochs}: "
        f"it ends before the learning rate comes down (set {fix} {epochs} to fit it)"
    )


def optimizers(
    module: torch.nn.Module,
    optimizer: OptimizerCallable | None,
    scheduler: LRSchedulerCallable | None,
    trainer: Any = None,
) -> OptimizerLRScheduler:
    """Lightning's ``configure_optimizers`` answer: the optimizer over the trainable parameters
    (:func:`default_optimizer` when unset) and the scheduler, stepped every epoch (a plateau
    scheduler watches ``val/loss``; a one-cycle one is checked against ``trainer``'s epochs,
    :func:`check_one_cycle`)."""
    parameters = [p for p in module.parameters() if p.requires_grad]
    built = (optimizer or default_optimizer)(parameters)
    if scheduler is None:
        return built
    schedule = scheduler(built)
    check_one_cycle(schedule, getattr(trainer, "max_epochs", None))
    config: LRSchedulerConfigType = {"scheduler": schedule, "interval": "epoch"}
    if isinstance(schedule, torch.optim.lr_scheduler.ReduceLROnPlateau):
        config["monitor"] = "val/loss"
    return {"optimizer": built, "lr_scheduler": config}
