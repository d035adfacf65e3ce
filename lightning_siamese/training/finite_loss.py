"""The first non-finite training loss stops the run, on every process, before its step spreads
it into the weights; the error names the epoch, step, pairs and the last good checkpoint."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from lightning_siamese.errors import NonFiniteLossError


def check_finite_loss(
    trainer: pl.Trainer | None, loss: torch.Tensor, batch: dict[str, Any]
) -> None:
    """Raise :class:`NonFiniteLossError` when ``loss`` is not finite on any process."""
    finite = bool(torch.isfinite(loss.detach()).all())
    if trainer is not None:
        finite = trainer.strategy.reduce_boolean_decision(finite, all=True)
    if finite:
        return
    callback = getattr(trainer, "checkpoint_callback", None)
    epoch, step = (trainer.current_epoch, trainer.global_step) if trainer else ("?", "?")
    pairs, last = batch["index"][:8].tolist(), getattr(callback, "last_model_path", "")
    raise NonFiniteLossError.at(loss.item(), epoch, step, pairs, last)
