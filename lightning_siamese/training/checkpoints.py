"""Checkpoints: files that are always whole, the best-and-last callback, what is wrong with a file.

Lightning writes a local checkpoint into a temporary file of the system's temporary folder, then
moves it into place. When that folder is on another file system (a RAM disk, a node-local disk
under a shared checkpoint folder) the move is a copy into the final path, so a kill during the
copy leaves a truncated ``last.ckpt`` where the previous good one was. Here the temporary file
lies in the checkpoint's own folder, is flushed to disk, and replaces the target with one
``os.replace``: a kill at any moment leaves either the previous checkpoint or the new one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_info

from lightning_siamese.errors import CheckpointError
from lightning_siamese.files import atomic_write
from lightning_siamese.training.checkpoint_files import PARTIAL_PREFIX, partial_files


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose saves to local paths are atomic; URLs (``s3://`` ...) are
    saved by Lightning as before. Loads (``--ckpt_path`` to resume, validate, test) are
    ``weights_only`` unless told otherwise, also on torch releases whose own default is not.
    Pass it as ``Trainer(plugins=[AtomicCheckpointIO()])``; the CLI uses it by default."""

    def load_checkpoint(
        self,
        path: str | Path,
        map_location: Any = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        try:
            return super().load_checkpoint(path, map_location, weights_only is not False)
        except FileNotFoundError as error:  # a URL or fsspec path with nothing there
            raise CheckpointError(f"{path}: no such checkpoint ({error})") from error

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        # A URL (s3://, gs://, file://, fsspec chains with ::) goes to Lightning's writer.
        if storage_options is not None or "://" in str(path) or "::" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        # ".checkpoint-<hex>.partial": never mistaken for "last*.ckpt" by --ckpt_path last.
        with atomic_write(path, prefix=PARTIAL_PREFIX) as handle:
            torch.save(checkpoint, handle)


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
