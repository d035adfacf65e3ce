"""Callbacks: writing predictions, and checkpoints whose ``last.ckpt`` follows every epoch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter, ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_info

from lightning_siamese.checkpoint_io import partial_files

EMBEDDINGS_FILE = "embeddings.pt"


class WriteEmbeddings(BasePredictionWriter):
    """Write ``predict``'s output as one file: ``{"embeddings": (N, D) float tensor,
    "paths": N file paths relative to the predicted folder}``, loadable with
    ``torch.load(path, weights_only=True)``.

    Args:
        output_dir: where to write; default ``<default_root_dir>/predictions``. Under several
            processes each writes ``embeddings-rank<R>.pt`` with its share.
    """

    def __init__(self, output_dir: str | None = None) -> None:
        super().__init__(write_interval="epoch")
        self.output_dir = output_dir

    def write_on_epoch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        predictions: Sequence[Any],
        batch_indices: Sequence[Any],
    ) -> None:
        batches = (
            predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        )
        embeddings = torch.cat([batch["embeddings"].float().cpu() for batch in batches])
        paths = [path for batch in batches for path in batch["paths"]]
        folder = Path(self.output_dir or Path(trainer.default_root_dir) / "predictions")
        folder.mkdir(parents=True, exist_ok=True)
        name = EMBEDDINGS_FILE
        if trainer.world_size > 1:
            name = f"embeddings-rank{trainer.global_rank}.pt"
        torch.save({"embeddings": embeddings, "paths": paths}, folder / name)
        rank_zero_info(
            f"wrote {len(paths)} embeddings of size {embeddings.shape[1]} to {folder / name}"
        )


class BestAndLastCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` follows every validation.

    Lightning 2.6 refreshes ``last.ckpt`` only when a top-k checkpoint is saved in the same
    step, so after the monitored metric stops improving ``--ckpt_path last`` would resume from
    the best epoch, not the last one, and repeat the epochs since.
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        # A save killed mid-write (AtomicCheckpointIO) leaves its partial file, never a
        # truncated checkpoint; a new fit clears them. Not `validate` or `test`: they may run
        # next to a fit that is writing into this folder.
        if stage == "fit" and trainer.is_global_zero and self.dirpath is not None:
            leftovers = partial_files(self.dirpath)
            for path in leftovers:
                path.unlink(missing_ok=True)
            if leftovers:
                rank_zero_info(
                    f"removed {len(leftovers)} partial checkpoint file(s) that an interrupted "
                    f"save left in {self.dirpath}"
                )

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def _refresh_last(self, trainer: pl.Trainer) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
