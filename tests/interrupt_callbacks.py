"""Callbacks for the interruption tests: the training process signals itself mid-epoch, or is
killed in the middle of writing a checkpoint.

Loaded by the CLI in a subprocess (``--trainer.callbacks+=...``, with ``tests/`` on PYTHONPATH).
"""

from __future__ import annotations

import io
import os
import signal
from typing import Any

import pytorch_lightning as pl
import torch


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


class SignalWhileSaving(pl.Callback):
    """Send ``signal_name`` to this process halfway through writing the first checkpoint file of
    ``epoch``: half the bytes are on disk, flushed, when the signal arrives (SIGKILL: the
    process dies; SIGINT: Python raises ``KeyboardInterrupt`` at once, inside the save)."""

    signal_name = "SIGKILL"

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch != self.epoch:
            return
        real_save, number = torch.save, getattr(signal, self.signal_name)
        if number == signal.SIGINT:  # Ctrl-C's usual effect, also where a shell that started
            signal.signal(
                signal.SIGINT, signal.default_int_handler
            )  # us in the background ignores it

        def half_then_signal(obj: object, f: Any, *args: Any, **kwargs: Any) -> None:
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            data = buffer.getvalue()
            if not hasattr(f, "fileno"):  # an in-memory buffer: nothing on disk yet
                f.write(data)
                return
            f.write(data[: len(data) // 2])
            f.flush()
            os.fsync(f.fileno())
            os.kill(os.getpid(), number)
            f.write(data[len(data) // 2 :])  # not reached: the signal ends the save

        torch.save = half_then_signal  # type: ignore[assignment]


class KillWhileSaving(SignalWhileSaving):
    """SIGKILL halfway through writing a checkpoint (:class:`SignalWhileSaving`)."""


class InterruptWhileSaving(SignalWhileSaving):
    """Ctrl-C (SIGINT) halfway through writing a checkpoint (:class:`SignalWhileSaving`)."""

    signal_name = "SIGINT"


class FailOnRank(pl.Callback):
    """Raise ``RuntimeError`` on process ``rank`` (only) at batch ``batch`` of the first epoch:
    the other processes are then waiting for it in the next collective operation."""

    def __init__(self, rank: int, batch: int = 1) -> None:
        self.rank = rank
        self.batch = batch

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_rank == self.rank and batch_idx == self.batch:
            raise RuntimeError(f"rank {self.rank} failed on purpose at batch {batch_idx}")


class SaveThenKill(pl.Callback):
    """After batch ``batch`` of epoch ``epoch``: every process saves ``path`` (a mid-epoch
    checkpoint, as ``every_n_train_steps`` writes), then the first SIGKILLs the whole process
    group, all ranks at once."""

    def __init__(self, epoch: int, batch: int, path: str) -> None:
        self.epoch = epoch
        self.batch = batch
        self.path = path

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            trainer.save_checkpoint(self.path)
            trainer.strategy.barrier()
            if trainer.is_global_zero:
                os.killpg(os.getpgrp(), signal.SIGKILL)
