"""A callback for the interruption tests: the training process signals itself mid-epoch.

Loaded by the CLI in a subprocess (``--trainer.callbacks+=...``, with ``tests/`` on PYTHONPATH).
"""

from __future__ import annotations

import os
import signal
from typing import Any

import pytorch_lightning as pl


class SignalAt(pl.Callback):
    """Send ``signal_name`` to this process at batch ``batch`` of epoch ``epoch``."""

    def __init__(self, epoch: int, batch: int, signal_name: str) -> None:
        self.epoch = epoch
        self.batch = batch
        self.signal_name = signal_name

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), getattr(signal, self.signal_name))
