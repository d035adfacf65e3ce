"""Checkpoints in, embeddings out: what ``evaluate``, ``search`` and ``export`` share.

No Trainer here: a plain batched loop over image files with the model's own preprocessing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, Dataset

from lightning_siamese.images import load_image
from lightning_siamese.transforms import Transform

if TYPE_CHECKING:
    from lightning_siamese.model import SiameseModel


def pick_device(device: str | None = None) -> torch.device:
    """``device`` if given, else the first CUDA device when there is one, else the CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(checkpoint: str | Path, device: str | torch.device | None = None) -> SiameseModel:
    """A :class:`~lightning_siamese.model.SiameseModel` from a ``fit`` checkpoint, in eval mode.

    Raises :class:`CheckpointError` with the reason when the file is missing, is not a Lightning
    checkpoint, or was written by another model.
    """
    from lightning_siamese.model import SiameseModel

    model = SiameseModel.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True)
    return model.to(pick_device(str(device) if device is not None else None)).eval()


class ImagePathsDataset(Dataset):
    """Images from a list of files, preprocessed; items ``image`` and ``index``."""

    def __init__(self, paths: Sequence[str | Path], transform: Transform) -> None:
        self.paths = [Path(path) for path in paths]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": self.transform(load_image(self.paths[index])), "index": index}


@torch.inference_mode()
def embed_paths(
    model: SiameseModel,
    paths: Sequence[str | Path],
    batch_size: int = 64,
    num_workers: int = 0,
) -> torch.Tensor:
    """Embeddings (N, D) of image files, in order, on the CPU (float32)."""
    if not paths:
        return torch.zeros(0, model.hparams["embedding_dim"])
    loader = DataLoader(
        ImagePathsDataset(paths, model.transform()),
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=model.device.type == "cuda",
    )
    model.eval()
    chunks = [
        model.net(batch["image"].to(model.device, non_blocking=True)).float().cpu()
        for batch in loader
    ]
    return torch.cat(chunks)
