"""Checkpoints in, embeddings out: what ``evaluate``, ``search`` and ``export`` share.

No Trainer here: a plain batched loop over image files with the model's own preprocessing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from lightning_siamese.data.image_files import ImageOutputs, run_over_images
from lightning_siamese.errors import ConfigError, DeviceError, InputError
from lightning_siamese.models.frozen_graph import FrozenGraph
from lightning_siamese.training.checkpoint_files import check_finite
from lightning_siamese.training.model import SiameseModel


def pick_device(device: str | None = None) -> torch.device:
    """``device`` if given, else the first CUDA device when there is one, else the CPU.

    Raises:
        DeviceError: ``device`` is not a device name, or not on this machine.
    """
    if not device:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as error:
        raise DeviceError(
            f"--device {device!r} is not a device: use cpu, cuda, cuda:1, mps, ... or leave it "
            "out (the first GPU when there is one, else the CPU)"
        ) from error
    present = {
        "cpu": (True, 1 << 16),
        "cuda": (torch.cuda.is_available(), torch.cuda.device_count()),
        "mps": (torch.backends.mps.is_available(), 1),
    }
    if chosen.type not in present:
        raise DeviceError(
            f"--device {device}: not a device these commands run on; use cpu, cuda, cuda:N or "
            "mps, or leave it out"
        )
    if chosen.type != "cpu":
        available, count = present[chosen.type]
        if not available:
            raise DeviceError(
                f"--device {device}: this machine has no {chosen.type.upper()} device that "
                "torch can use (a CPU-only torch, or no driver); use --device cpu, or leave "
                "--device out"
            )
        if chosen.index is not None and chosen.index >= count:
            raise DeviceError(
                f"--device {device}: this machine has {count} {chosen.type} device(s), "
                f"numbered from 0"
            )
    return chosen


def load_model(checkpoint: str | Path, device: str | torch.device | None = None) -> SiameseModel:
    """A :class:`~lightning_siamese.training.model.SiameseModel` from a ``fit`` checkpoint, in
    eval mode.

    Raises :class:`CheckpointError` with the reason when the file is missing, is not a Lightning
    checkpoint, was written by another model, or holds weights that are not finite.
    """
    model = SiameseModel.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True)
    check_finite(checkpoint, model.state_dict())
    return model.to(pick_device(str(device) if device is not None else None)).eval()


def network_graph(model: SiameseModel, count: int, batch_size: int) -> FrozenGraph:
    """The whole network over ``count`` images in eval mode, as one frozen graph where that
    pays (:class:`~lightning_siamese.models.frozen_graph.FrozenGraph` ``auto``; silent: a graph
    that fails or disagrees only means the eager speed)."""
    return FrozenGraph(model.net.forward, "auto", -(-count // batch_size), log=lambda _: None)


def embed_files(
    model: SiameseModel,
    paths: Sequence[str | Path],
    batch_size: int = 64,
    num_workers: int = 0,
    graph: FrozenGraph | None = None,
) -> ImageOutputs:
    """Embeddings (K, D) of the readable files among ``paths``, in order, on the CPU (float32),
    with their indices into ``paths`` and ``(index, reason)`` of each unreadable file: the one
    loop, :func:`~lightning_siamese.data.image_files.run_over_images`, through ``graph``
    (default :func:`network_graph` for these files).

    Raises:
        ConfigError: ``batch_size`` below 1 or ``num_workers`` below 0.
    """
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if not (isinstance(num_workers, int) and num_workers >= 0):
        raise ConfigError(f"num_workers must be an integer >= 0, got {num_workers!r}")
    model.eval()
    graph = graph or network_graph(model, len(paths), batch_size)
    result = run_over_images(graph, paths, model.transform(), batch_size, num_workers, model.device)
    if not result.indices:
        result.outputs = torch.zeros(0, model.hparams["embedding_dim"])
    return result


def embed_paths(
    model: SiameseModel,
    paths: Sequence[str | Path],
    batch_size: int = 64,
    num_workers: int = 0,
    graph: FrozenGraph | None = None,
) -> torch.Tensor:
    """Embeddings (N, D) of image files that must all be readable, in order, on the CPU (see
    :func:`embed_files`); an :class:`~lightning_siamese.errors.InputError` names the files that
    are not."""
    result = embed_files(model, paths, batch_size, num_workers, graph)
    if result.unreadable:
        listed = "; ".join(f"{paths[index]}: {reason}" for index, reason in result.unreadable[:3])
        raise InputError(f"{len(result.unreadable)} unreadable image(s): {listed}")
    return result.outputs


def gather_rows(
    count: int, dim: int, sources: Sequence[tuple[torch.Tensor, list[int], list[int]]]
) -> torch.Tensor:
    """A (count, dim) tensor filled from ``(source, target rows, source rows)`` triples."""
    result = torch.empty(count, dim)
    for source, target_rows, source_rows in sources:
        if target_rows:
            result[torch.tensor(target_rows)] = source[torch.tensor(source_rows)]
    return result
