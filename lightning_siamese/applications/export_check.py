"""Checking an exported file: run it (ONNX Runtime, or ``torch.export.load``) on real or random
images and compare its embeddings with the PyTorch network's."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightning_siamese.applications.export_format import (
    CHECK_IMAGES,
    FORMATS,
    INPUT_NAME,
    OUTPUT_NAME,
)
from lightning_siamese.data.folders import image_inputs
from lightning_siamese.data.image_files import ImageFilesDataset, image_batches
from lightning_siamese.errors import ExportError
from lightning_siamese.training.model import SiameseModel


def example_inputs(image_size: int, batch_size: int) -> torch.Tensor:
    """A fixed random batch (seed 0) of preprocessed-image shape: exports and default checks."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(max(batch_size, 1), 3, image_size, image_size, generator=generator)


def load_exported(path: str | Path, fmt: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function preprocessed images (B, 3, S, S) -> embeddings (B, D) running the exported file
    (ONNX Runtime on the CPU, or ``torch.export.load``)."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

        def run_onnx(images: torch.Tensor) -> torch.Tensor:
            array = images.detach().cpu().float().numpy()
            return torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: array})[0])

        return run_onnx
    if fmt == "pt2":
        module = torch.export.load(str(path)).module()

        def run_program(images: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return module(images.cpu().float())

        return run_program
    raise ValueError(f"unknown format {fmt!r}; choose one of {FORMATS}")


def max_difference(a: torch.Tensor | Any, b: torch.Tensor | Any) -> float:
    """max |a - b| over all elements (tensors or arrays of the same shape)."""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return float((a - b).abs().max()) if a.numel() else 0.0


def check_inputs(
    model: SiameseModel,
    source: str | Path | None,
    count: int = 3,
    skipped: list[tuple[str, str]] | None = None,
) -> tuple[torch.Tensor, str]:
    """A batch to check with: the first :data:`CHECK_IMAGES` readable images of ``source`` (an
    image or a folder) preprocessed by ``model.transform()``, or without ``source``, ``count``
    random inputs of the right shape; and which it is. Unreadable files go to ``skipped`` with
    their reason."""
    if source is None:
        size = int(model.hparams["image_size"])
        return example_inputs(size, count), f"{count} random inputs (no --check images given)"
    dataset = ImageFilesDataset(image_inputs(source, "--check").paths(), model.transform())
    unreadable: list[tuple[int, str]] = []
    tensors: list[torch.Tensor] = []
    # The one loop over image files, running nothing: the first readable images, preprocessed.
    for _, images in image_batches(lambda batch: batch, dataset, unreadable, CHECK_IMAGES):
        tensors += list(images)[: CHECK_IMAGES - len(tensors)]
        if len(tensors) == CHECK_IMAGES:
            break
    if skipped is not None:
        skipped += [(str(dataset.paths[index]), reason) for index, reason in unreadable]
    if not tensors:
        raise ExportError(f"{source}: no readable image to check with")
    return torch.stack(tensors), f"{len(tensors)} image(s) from {source}"


def compare(
    net: nn.Module, run: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor
) -> float:
    """max |exported - PyTorch| over the batch and, to exercise the dynamic batch, its first
    image alone."""
    batches = [images] if len(images) == 1 else [images, images[:1]]
    net = net.eval()
    worst = 0.0
    for batch in batches:
        with torch.no_grad():
            expected = net(batch)
        worst = max(worst, max_difference(run(batch), expected))
    return worst
