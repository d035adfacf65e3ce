"""Callbacks: writing ``predict``'s embeddings."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.callbacks import BasePredictionWriter
from pytorch_lightning.utilities import rank_zero_info

from lightning_siamese.errors import InputError, UserError
from lightning_siamese.files import atomic_write
from lightning_siamese.outputs import claim_file

EMBEDDINGS_FILE = "embeddings.pt"
WRITTEN_BY = "lightning-siamese predict"


class WriteEmbeddings(BasePredictionWriter):
    """Write ``predict``'s output as one file: ``{"embeddings": (N, D) float tensor,
    "paths": N file paths relative to the predicted folder, in the folder's sorted order,
    "skipped": [{"path", "reason"}, ...] for every file left out}``, loadable with
    ``torch.load(path, weights_only=True)``. The file is written whole, and it replaces only
    an earlier ``predict``'s file: another file of that name stops ``predict`` before it starts.

    Under several processes (DDP, any number of nodes) each embeds its share; the first
    gathers them and writes the one file, every image once (a process may have none).

    Args:
        output_dir: where to write; default ``<default_root_dir>/predictions``.
    """

    def __init__(self, output_dir: str | None = None) -> None:
        super().__init__(write_interval="epoch")
        self.output_dir = output_dir

    def path(self, trainer: pl.Trainer) -> Path:
        """The file written."""
        folder = Path(self.output_dir or Path(trainer.default_root_dir) / "predictions")
        return folder / EMBEDDINGS_FILE

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Before any image is embedded; the first process checks, every process stops.
        problem = None
        if trainer.is_global_zero:
            try:
                claim_file(
                    self.path(trainer),
                    "the predictions file",
                    ours=written_here,
                    option="--trainer.default_root_dir",
                    how="move it, or predict into another --trainer.default_root_dir",
                )
            except UserError as error:
                problem = error
        problem = trainer.strategy.broadcast(problem)
        if problem is not None:
            raise problem

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
        dim = int(pl_module.hparams.get("embedding_dim", 0))
        share = {
            "embeddings": torch.cat(
                [torch.zeros(0, dim)] + [batch["embeddings"].float().cpu() for batch in batches]
            ),
            "paths": [path for batch in batches for path in batch["paths"]],
            "indices": [index for batch in batches for index in batch.get("indices", [])],
            "skipped": [pair for batch in batches for pair in batch.get("skipped", [])],
        }
        shares = _gather_to_first(share, trainer.world_size)
        if not trainer.is_global_zero:
            return
        # Left out by the check before predict started, then as met (once: shards repeat).
        skipped = dict.fromkeys(_dataset_skipped(trainer))
        found: dict[int, tuple[int, str, torch.Tensor]] = {}
        for part in shares:  # shards padded with repeats: each image once, by its index
            skipped.update(dict.fromkeys(tuple(pair) for pair in part["skipped"]))
            indices = part["indices"] or range(len(part["paths"]))
            for row in zip(indices, part["paths"], part["embeddings"], strict=True):
                found.setdefault(row[0], row)
        rows = [found[index] for index in sorted(found)]  # the folder's sorted order
        if not rows:  # as search and evaluate: nothing to write is an error, not an empty file
            listed = "; ".join(f"{path}: {reason}" for path, reason in list(skipped)[:3])
            raise InputError(
                f"--data.predict_root: no readable image ({len(skipped)} unreadable: {listed})"
            )
        embeddings = torch.stack([row[2] for row in rows]) if rows else torch.zeros(0, dim)
        document = {
            "written_by": WRITTEN_BY,
            "embeddings": embeddings,
            "paths": [row[1] for row in rows],
            "skipped": [{"path": path, "reason": reason} for path, reason in skipped],
        }
        path = self.path(trainer)
        with atomic_write(path) as handle:
            torch.save(document, handle)
        note = f"; {len(skipped)} files skipped, listed under 'skipped'" if skipped else ""
        rank_zero_info(
            f"wrote {len(rows)} embeddings of size {embeddings.shape[1]} to {path}{note}"
        )


def written_here(path: Path) -> bool:
    """Whether ``path`` is a file :class:`WriteEmbeddings` wrote (this release's or 0.1's)."""
    content = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return isinstance(content, dict) and {"embeddings", "paths", "skipped"} <= set(content)


def _gather_to_first(share: dict[str, Any], world_size: int) -> list[dict[str, Any]]:
    """Every process's ``share`` on the first process (a collective: all must call it)."""
    if world_size == 1 or not (dist.is_available() and dist.is_initialized()):
        return [share]
    shares: list[Any] = [None] * world_size if dist.get_rank() == 0 else []
    dist.gather_object(share, shares or None, dst=0)
    return shares


def _dataset_skipped(trainer: pl.Trainer) -> list[tuple[str, str]]:
    loaders = trainer.predict_dataloaders
    loader = loaders[0] if isinstance(loaders, list | tuple) and loaders else loaders
    return list(getattr(getattr(loader, "dataset", None), "skipped", []))
