"""Checkpoints in, embeddings out: what ``evaluate``, ``search`` and ``export`` share.

No Trainer here: a plain batched loop over image files with the model's own preprocessing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from lightning_siamese.data.images import ImageFilesDataset, load_image
from lightning_siamese.models.frozen_graph import FrozenGraph
from lightning_siamese.training.model import SiameseModel


def pick_device(device: str | None = None) -> torch.device:
    """``device`` if given, else the first CUDA device when there is one, else the CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(checkpoint: str | Path, device: str | torch.device | None = None) -> SiameseModel:
    """A :class:`~lightning_siamese.training.model.SiameseModel` from a ``fit`` checkpoint, in
    eval mode.

    Raises :class:`CheckpointError` with the reason when the file is missing, is not a Lightning
    checkpoint, or was written by another model.
    """
    model = SiameseModel.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True)
    return model.to(pick_device(str(device) if device is not None else None)).eval()


@torch.inference_mode()
def embed_paths(
    model: SiameseModel,
    paths: Sequence[str | Path],
    batch_size: int = 64,
    num_workers: int = 0,
    graph: FrozenGraph | None = None,
) -> torch.Tensor:
    """Embeddings (N, D) of image files, in order, on the CPU (float32), through ``graph`` (by
    default a :class:`~lightning_siamese.models.frozen_graph.FrozenGraph` of the network for these
    files: a frozen graph where it pays)."""
    if not paths:
        return torch.zeros(0, model.hparams["embedding_dim"])
    loader = DataLoader(
        ImageFilesDataset(paths, model.transform()),
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=model.device.type == "cuda",
    )
    model.eval()
    net = graph or network_graph(model, len(paths), batch_size)
    chunks = [
        net(batch["image"].to(model.device, non_blocking=True)).float().cpu() for batch in loader
    ]
    return torch.cat(chunks)


def network_graph(model: SiameseModel, count: int, batch_size: int) -> FrozenGraph:
    """The whole network over ``count`` images in eval mode, as one frozen graph where that
    pays (:class:`~lightning_siamese.models.frozen_graph.FrozenGraph` ``auto``; silent: a graph that
    fails or disagrees only means the eager speed)."""
    return FrozenGraph(model.net.forward, "auto", -(-count // batch_size), log=lambda _: None)


def _unreadable_reason(model: SiameseModel, path: Path) -> str | None:
    """Why the file cannot be read and preprocessed, or None when it can."""
    try:
        model.transform()(load_image(path))
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return None


def embed_files(
    model: SiameseModel,
    paths: Sequence[Path],
    batch_size: int = 64,
    num_workers: int = 0,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, list[int], list[tuple[int, str]]]:
    """Embed the readable files among ``paths``, skipping the unreadable ones.

    Files go through :func:`embed_paths` in chunks; a chunk that
    fails is split in halves until the failing file is alone, so one bad file costs a few
    re-runs, not a crash.

    Returns:
        the embeddings (K, D) of the readable files in order, their indices into ``paths``, and
        ``(index, reason)`` for each unreadable file.
    """
    chunk_size = chunk_size or max(16 * batch_size, 1024)
    graph = network_graph(model, len(paths), batch_size)  # one for every chunk
    pieces: list[tuple[list[int], torch.Tensor]] = []
    unreadable: list[tuple[int, str]] = []

    def run(indices: list[int]) -> None:
        workers = num_workers if len(indices) > batch_size else 0
        try:
            rows = embed_paths(model, [paths[i] for i in indices], batch_size, workers, graph)
        except Exception:
            if len(indices) > 1:
                half = len(indices) // 2
                run(indices[:half])
                run(indices[half:])
                return
            reason = _unreadable_reason(model, paths[indices[0]])
            if reason is None:  # the file is fine: something else went wrong
                raise
            unreadable.append((indices[0], reason))
            return
        pieces.append((indices, rows))

    for start in range(0, len(paths), chunk_size):
        run(list(range(start, min(start + chunk_size, len(paths)))))
    if not pieces:
        return torch.zeros(0, model.hparams["embedding_dim"]), [], unreadable
    # The halves run in order, so the pieces are in file order already.
    kept = [index for indices, _ in pieces for index in indices]
    return torch.cat([rows for _, rows in pieces]), kept, unreadable


def gather_rows(
    count: int, dim: int, sources: Sequence[tuple[torch.Tensor, list[int], list[int]]]
) -> torch.Tensor:
    """A (count, dim) tensor filled from ``(source, target rows, source rows)`` triples."""
    result = torch.empty(count, dim)
    for source, target_rows, source_rows in sources:
        if target_rows:
            result[torch.tensor(target_rows)] = source[torch.tensor(source_rows)]
    return result
