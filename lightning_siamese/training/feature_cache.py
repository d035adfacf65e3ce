"""The frozen trunk's output, computed once per distinct image at ``fit`` start.

When everything before the trainable tail is frozen (eval-mode BatchNorm, no dropout) and the
images are not augmented, an image's frozen features never change: computing them once and
training only the tail gives the same losses and gradients at a fraction of the compute. The
same holds for augmented images that take one of a fixed set of views
(:mod:`~lightning_siamese.data.views`): the cache then holds every view. The
features live in one preallocated tensor, in memory or memory-mapped from a file, sized before
anything is computed (:class:`FeatureCache`, pure torch). :class:`CacheFrozenFeatures`, the
callback a model with ``cache_frozen_features`` brings, builds the caches for the data module's
training and validation images and has it serve them instead of the images
(:meth:`~lightning_siamese.data.datamodule.SiameseDataModule.serve_features`); the model only
sees batches that carry ``features``.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info

from lightning_siamese.data.datamodule import SiameseDataModule
from lightning_siamese.data.image_files import ImageFilesDataset, image_batches
from lightning_siamese.data.transforms import Transform
from lightning_siamese.data.views import ViewFilesDataset
from lightning_siamese.errors import CacheMemoryError, ConfigError, PairDataError
from lightning_siamese.models.embedding import EmbeddingNet
from lightning_siamese.models.folding import FoldedFrozenPart
from lightning_siamese.models.frozen_graph import FrozenGraph


def available_memory() -> int | None:
    """Bytes of memory available now (Linux), or None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def format_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


class FeatureCache:
    """Features of ``count`` images, row ``i`` = image ``i`` of a split (left = 2 * pair,
    right = 2 * pair + 1).

    Args:
        count: number of images.
        shape: the frozen output of one image, e.g. ``(1024, 13, 13)``.
        dtype: kept as computed (float32) so the cached path is exact.
        directory: put the tensor in a memory-mapped ``.npy`` file there instead of in memory
            (removed by :meth:`close`).
    """

    def __init__(
        self,
        count: int,
        shape: Sequence[int],
        dtype: torch.dtype = torch.float32,
        directory: str | Path | None = None,
    ) -> None:
        self.count = count
        self.shape = tuple(shape)
        self.dtype = dtype
        self.path: Path | None = None
        if directory is None:
            self.features = torch.empty((count, *self.shape), dtype=dtype)
        else:
            folder = Path(directory)
            # Unique per host and process: processes of several hosts may share the folder.
            host = "".join(c if c.isalnum() or c in "-." else "_" for c in socket.gethostname())
            self.path = folder / f"features-{host}-{os.getpid()}-{id(self):x}.npy"
            # NumPy has no bfloat16: such features are mapped as 16-bit words and viewed back.
            bf16 = dtype == torch.bfloat16
            numpy_dtype = np.uint16 if bf16 else torch.empty(0, dtype=dtype).numpy().dtype
            try:
                folder.mkdir(parents=True, exist_ok=True)
                array = np.lib.format.open_memmap(
                    self.path, mode="w+", dtype=numpy_dtype, shape=(count, *self.shape)
                )
            except OSError as error:
                raise ConfigError(
                    f"feature_cache_dir {folder}: cannot write the feature cache there ({error}); "
                    "pass a writable folder on a fast disk"
                ) from error
            features = torch.from_numpy(array)
            self.features = features.view(torch.bfloat16) if bf16 else features

    @staticmethod
    def size_of(count: int, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> int:
        """Bytes the cache of ``count`` images of ``shape`` takes."""
        return count * int(np.prod(shape)) * torch.empty(0, dtype=dtype).element_size()

    @property
    def nbytes(self) -> int:
        return self.size_of(self.count, self.shape, self.dtype)

    def describe(self) -> str:
        where = f"memory-mapped at {self.path}" if self.path else "in memory"
        dims = "x".join(str(d) for d in self.shape)
        return (
            f"{self.count:,} images x {dims} {str(self.dtype).replace('torch.', '')} = "
            f"{format_bytes(self.nbytes)} {where}"
        )

    def gather(self, rows: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """The features of images ``rows``, stacked (a copy, on the CPU)."""
        return self.features.index_select(0, torch.as_tensor(rows, dtype=torch.long))

    def close(self) -> None:
        """Drop the features (and remove the memory-mapped file)."""
        self.features = torch.empty(0)
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None


@torch.no_grad()
def build_feature_cache(
    frozen: Callable[[torch.Tensor], torch.Tensor],
    paths: Sequence[Path],
    transform: Transform,
    device: torch.device,
    batch_size: int = 64,
    num_workers: int = 0,
    directory: str | Path | None = None,
    max_memory_fraction: float = 0.8,
    log: Callable[[str], None] = print,
    convert: Callable[[torch.Tensor], torch.Tensor] | None = None,
    processes: int = 1,
    graph: FrozenGraph | None = None,
    seeds: Sequence[int] | None = None,
) -> FeatureCache:
    """Decode and run every image through ``frozen`` once; return the filled cache.

    The size is computed from one image first and reported; an in-memory cache larger than
    ``max_memory_fraction`` of the available memory is refused with a message naming
    ``directory`` (a memory-mapped file) as the way out.

    Args:
        convert: applied to each batch of images before ``frozen`` (e.g. to bfloat16 for a
            network held in bfloat16, as the trainer's precision converts its inputs).
        processes: the processes of this host that each build the same cache at once (one per
            device under DDP): the memory check and the size printed count them all.
        graph: runs the batches instead of ``frozen`` (a
            :class:`~lightning_siamese.models.frozen_graph.FrozenGraph` of it); the size probe is
            eager.
        seeds: each row's seed for a random ``transform``: augmented views of the images
            (:class:`~lightning_siamese.data.views.ViewFilesDataset`), a path once per view.
    """
    started = time.perf_counter()
    dataset = (
        ImageFilesDataset(paths, transform)
        if seeds is None
        else ViewFilesDataset(paths, transform, seeds)
    )
    convert = convert or (lambda images: images)
    first = dataset[0]
    if first["unreadable"]:
        raise PairDataError(f"{paths[0]}: {first['unreadable']}")
    probe = frozen(convert(first["image"][None].to(device)))
    shape, dtype = tuple(probe.shape[1:]), probe.dtype
    size = FeatureCache.size_of(len(paths), shape, dtype)
    views = len(paths) // len(set(paths)) if seeds is not None else 1  # a split's files differ
    what = f"{len(paths):,} images" if views == 1 else f"{len(paths):,} views ({views} per image)"
    each = f" in each of the {processes} processes on this host" if processes > 1 else ""
    available = available_memory()
    needed = size * processes
    if directory is None and available is not None and needed > max_memory_fraction * available:
        raise CacheMemoryError(
            f"the frozen-feature cache needs {format_bytes(size)} for {what}"
            f"{each} ({format_bytes(needed)} in all) but {format_bytes(available)} of memory is "
            "available: set --model.feature_cache_dir to a folder on a fast disk (a "
            "memory-mapped file), or --model.cache_frozen_features false"
            + (", or fewer --data.augment_views" if views > 1 else "")
        )
    cache = FeatureCache(len(paths), shape, dtype, directory)
    total = f"{each}, {format_bytes(needed)} in all" if processes > 1 else ""
    described = cache.describe()
    if views > 1:
        described = f"{views} views of each image, " + described.replace(" images x", " views x")
    log(f"frozen-feature cache: {described}{total}; computing")
    unreadable: list[tuple[int, str]] = []
    try:
        for rows, features in image_batches(
            graph or frozen, dataset, unreadable, batch_size, num_workers, device, convert
        ):
            cache.features[rows] = features.cpu()
    except BaseException:  # interrupted or failed: no half-built file left behind
        cache.close()
        raise
    if unreadable:  # read fine when the pairs were checked, moments ago
        cache.close()
        bad = {str(paths[index]): reason for index, reason in unreadable}  # (once per view)
        listed = "; ".join(f"{path}: {reason}" for path, reason in list(bad.items())[:3])
        raise PairDataError(
            f"{len(bad)} image(s) became unreadable since the pairs were checked "
            f"({listed}); fix or remove them and start again"
        )
    seconds = time.perf_counter() - started
    log(f"frozen-feature cache: {what} in {seconds:.1f} s")
    return cache


class CacheFrozenFeatures(pl.Callback):
    """At ``fit`` start, run every distinct training and validation image through the model's
    frozen part once, through one :class:`~lightning_siamese.models.frozen_graph.FrozenGraph`,
    under the trainer's precision, and have the data module serve those features instead of
    the images until the fit ends (training images when they are not augmented, or under
    ``--data.augment_views`` every fixed view of them). A model
    with ``cache_frozen_features`` brings this callback itself (``configure_callbacks``).

    Args:
        directory: keep the features in memory-mapped files there instead of in memory.
        graph_mode: how the frozen part runs over the images (see
            :class:`~lightning_siamese.models.frozen_graph.FrozenGraph`); ``auto`` in float32
            on the CPU folds the batch norms into the convolutions instead of compiling
            (:class:`~lightning_siamese.models.folding.FoldedFrozenPart`).
    """

    def __init__(self, directory: str | None = None, graph_mode: str = "auto") -> None:
        self.directory = directory
        self.graph_mode = graph_mode
        self.caches: dict[str, FeatureCache] = {}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        offer = getattr(datamodule, "cacheable_images", None)
        if offer is None:
            rank_zero_info("frozen-feature cache: off (the data module offers no image list)")
            return
        wanted = {split: offer(split) for split in ("train", "val")}
        if wanted["train"] is None:
            rank_zero_info(
                "frozen-feature cache: off for training images (augmentation is on; "
                "--data.augment_views K would cache K views of each)"
            )
        splits = {split: rows for split, rows in wanted.items() if rows is not None}
        batch_size = int(getattr(datamodule, "hparams", {}).get("batch_size", 64))
        workers = int(getattr(datamodule, "hparams", {}).get("num_workers", 0))
        batches = sum(-(-len(rows[0]) // batch_size) for rows in splits.values())
        net = cast(EmbeddingNet, pl_module.net)

        def log_graph(text: str) -> None:
            rank_zero_info(f"frozen graph: {text}")

        frozen, mode = net.forward_frozen, self.graph_mode
        # Folded in float32 on the CPU only, where it was measured (1.22-1.24x for the ResNet50
        # of configs/ttl.yaml); under bf16 autocast it ran 0.89x and 1.07x as fast in two runs
        # (benchmarks/layer_rates.py). Under `auto` only, which then stays eager: a compiled
        # graph (`inductor`) folds the batch norms itself, and its measured speed-up was over
        # the unfolded pass.
        fold = mode == "auto" and str(trainer.precision) in ("32-true", "32")
        fold = fold and pl_module.device.type == "cpu"
        folded = FoldedFrozenPart.of(net, log_graph) if fold else None
        if folded is not None:
            frozen, mode = folded.forward, "eager"
            log_graph(f"{folded.folded} batch norms folded into their convolutions")
        graph = FrozenGraph(frozen, mode, batches, log_graph)
        plugin = trainer.precision_plugin
        # Under the trainer's precision: bf16-mixed autocasts (bf16 features, half the
        # memory); bf16-true and 16-true convert the inputs as they do for every batch.
        with plugin.forward_context():
            for split, (paths, transform, seeds) in splits.items():

                def log(text: str, split: str = split) -> None:
                    rank_zero_info(f"{split}: {text}")

                self.caches[split] = build_feature_cache(
                    frozen,
                    paths,
                    transform,
                    pl_module.device,
                    batch_size=batch_size,
                    num_workers=workers,
                    directory=self.directory,
                    log=log,
                    convert=plugin.convert_input,
                    processes=trainer.num_devices,  # this node's processes
                    graph=graph,
                    seeds=seeds,
                )
        cast(SiameseDataModule, datamodule).serve_features(dict(self.caches))

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close(trainer)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._close(trainer)

    def _close(self, trainer: pl.Trainer) -> None:
        """Back to images (a later ``validate`` or ``test`` reads them), caches dropped."""
        serve = getattr(getattr(trainer, "datamodule", None), "serve_features", None)
        if serve is not None and self.caches:
            serve({})
        for cache in self.caches.values():
            cache.close()
        self.caches = {}
