"""Callbacks: writing ``predict``'s embeddings."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter
from pytorch_lightning.utilities import rank_zero_info

EMBEDDINGS_FILE = "embeddings.pt"


class WriteEmbeddings(BasePredictionWriter):
    """Write ``predict``'s output as one file: ``{"embeddings": (N, D) float tensor,
    "paths": N file paths relative to the predicted folder, "skipped": [{"path", "reason"},
    ...] for every file left out}``, loadable with ``torch.load(path, weights_only=True)``.

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
        skipped = [pair for batch in batches for pair in batch.get("skipped", [])]
        if trainer.is_global_zero:  # the files every process left out before it started
            skipped = [*_dataset_skipped(trainer), *skipped]
        folder = Path(self.output_dir or Path(trainer.default_root_dir) / "predictions")
        folder.mkdir(parents=True, exist_ok=True)
        name = EMBEDDINGS_FILE
        if trainer.world_size > 1:
            name = f"embeddings-rank{trainer.global_rank}.pt"
        document = {
            "embeddings": embeddings,
            "paths": paths,
            "skipped": [{"path": path, "reason": reason} for path, reason in skipped],
        }
        torch.save(document, folder / name)
        note = f"; {len(skipped)} files skipped, listed under 'skipped'" if skipped else ""
        rank_zero_info(
            f"wrote {len(paths)} embeddings of size {embeddings.shape[1]} to {folder / name}{note}"
        )


def _dataset_skipped(trainer: pl.Trainer) -> list[tuple[str, str]]:
    loaders = trainer.predict_dataloaders
    loader = loaders[0] if isinstance(loaders, list | tuple) and loaders else loaders
    return list(getattr(getattr(loader, "dataset", None), "skipped", []))
