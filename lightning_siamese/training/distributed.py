"""What a fit over several processes (DDP) sets up so that N processes train as one process with
the global batch would: synchronised BatchNorm in the trained layers (the losses gather the
global batch themselves, :mod:`~lightning_siamese.models.across_processes`); and DDP's
gradients as views of its communication buckets, so a gradient is not copied into a bucket and
back every step."""

from __future__ import annotations

import warnings

import pytorch_lightning as pl

from lightning_siamese.errors import ConfigError
from lightning_siamese.models.embedding import EmbeddingNet
from lightning_siamese.models.synced_batch_norm import sync_batch_norm


def prepare_processes(trainer: pl.Trainer, net: EmbeddingNet, sync_batchnorm: bool) -> None:
    """Before a fit on several processes (before DDP wraps the model): the trained BatchNorm
    layers of ``net`` normalise over every process's batch when ``sync_batchnorm``; DDP keeps
    gradients in its buckets (``gradient_as_bucket_view``, unless the strategy sets it);
    Lightning's own ``sync_batchnorm`` refused (torch's SyncBatchNorm runs on CUDA only,
    converts the frozen layers too and drops the activation of timm's BatchNorm layers)."""
    if getattr(trainer.strategy, "_layer_sync", None) is not None:
        raise ConfigError(
            "trainer.sync_batchnorm would also convert the frozen BatchNorm layers and drop "
            "timm's fused activations; the model synchronises its trained BatchNorm layers "
            "itself under DDP (--model.sync_batchnorm, on by default): leave "
            "trainer.sync_batchnorm false"
        )
    ddp_options = getattr(trainer.strategy, "_ddp_kwargs", None)
    if isinstance(ddp_options, dict):
        ddp_options.setdefault("gradient_as_bucket_view", True)
    if not sync_batchnorm or trainer.world_size == 1:
        return
    skipped = sync_batch_norm(net, net.frozen_modules())
    if skipped:
        warnings.warn(
            "these trained normalisation layers are not plain BatchNorm and normalise over "
            f"each process's share of the batch only: {', '.join(skipped)}",
            stacklevel=2,
        )
