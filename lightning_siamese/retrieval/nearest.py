"""Exact nearest neighbours by cosine similarity: the one top-k of the package, in torch blocks or
through faiss (``pip install lightning-siamese[faiss]``) for large problems on the CPU."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Literal

import torch

from lightning_siamese.retrieval.ranks import with_offset

Backend = Literal["auto", "faiss", "torch"]
#: ``auto`` takes faiss from this many scores (queries x gallery) on, a round figure between
#: the sizes measured by ``benchmarks/retrieval.py``: at 1k x 1k the torch blocks were faster
#: (0.01 s against faiss's 0.04 s), at 10k x 10k faiss was (1.5x).
FAISS_MIN_SCORES = 1 << 24


def faiss_module() -> ModuleType | None:
    """The ``faiss`` module, or None when it is not installed (or does not load)."""
    try:
        return importlib.import_module("faiss")
    except Exception:  # ImportError, or a wheel whose native library does not load
        return None


def top_k(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    k: int,
    exclude: Sequence[int | None] | None = None,
    block_elements: int = 1 << 24,
    device: torch.device | str | None = None,
    backend: Backend = "auto",
    gallery_offset: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` gallery rows most cosine-similar to each query: ``(scores, indices)``, (Q, k)
    each, best first, on ``device`` (default: the gallery's, so CUDA tensors stay on the GPU).

    Exact. ``backend``: ``faiss`` (a flat inner-product index: BLAS products and a heap per
    query), ``torch`` (the score matrix built ``block_elements // len(gallery)`` query rows at
    a time, then ``torch.topk``; memory stays bounded whatever the sizes) or ``auto``: faiss
    on the CPU when it is installed and there are :data:`FAISS_MIN_SCORES` scores or more
    (not on macOS), torch otherwise (and on a GPU). Both give the same neighbours (tied
    scores may come in another order). ``k`` is capped at the gallery size. ``exclude[i]`` is
    a gallery row left out of query ``i``'s results (the query itself) or None; an excluded
    row that still has to fill the top ``k`` scores ``-inf``. ``gallery_offset`` (one value a
    gallery row, a re-ranking's: :mod:`~lightning_siamese.retrieval.reranking`) is taken off
    each gallery row's scores.
    """
    device = torch.device(device) if device is not None else gallery.device
    queries, gallery = with_offset(queries.to(device), gallery.to(device), gallery_offset)
    count = min(k, gallery.shape[0])
    if backend not in ("auto", "faiss", "torch"):
        raise ValueError(f"backend must be auto, faiss or torch, got {backend!r}")
    # auto: faiss for large CPU problems, never on macOS, where faiss's and torch's OpenMP
    # runtimes clash in one process.
    wanted = backend == "faiss" or (
        backend == "auto"
        and device.type == "cpu"
        and sys.platform != "darwin"
        and len(queries) * len(gallery) >= FAISS_MIN_SCORES
    )
    faiss = faiss_module() if wanted else None
    if backend == "faiss" and (faiss is None or device.type != "cpu"):
        raise ValueError("backend='faiss' needs faiss installed and CPU tensors")
    if faiss is not None and len(queries) and count:
        return _faiss_top_k(faiss, queries, gallery, count, exclude)
    block = max(1, block_elements // max(1, gallery.shape[0]))
    scores, indices = [], []
    for start in range(0, queries.shape[0], block):
        similarity = queries[start : start + block] @ gallery.T
        if exclude is not None:
            for offset, row in enumerate(exclude[start : start + block]):
                if row is not None:
                    similarity[offset, row] = float("-inf")
        best = torch.topk(similarity, count, dim=1)
        scores.append(best.values)
        indices.append(best.indices)
    if not scores:
        empty = torch.zeros(0, count, device=device)
        return empty, empty.long()
    return torch.cat(scores), torch.cat(indices)


def _faiss_top_k(
    faiss: ModuleType,
    queries: torch.Tensor,
    gallery: torch.Tensor,
    count: int,
    exclude: Sequence[int | None] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`top_k` through a flat inner-product index (unit vectors: cosine)."""
    faiss.omp_set_num_threads(torch.get_num_threads())
    index = faiss.IndexFlatIP(gallery.shape[1])
    index.add(gallery.contiguous().numpy())
    wanted = min(count + (exclude is not None), gallery.shape[0])
    scores, indices = index.search(queries.contiguous().numpy(), wanted)
    return drop_excluded(torch.from_numpy(scores), torch.from_numpy(indices), count, exclude)


def drop_excluded(
    scores: torch.Tensor,
    indices: torch.Tensor,
    count: int,
    exclude: Sequence[int | None] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` results of each row without its excluded gallery row, from results
    searched one deeper; where the row is needed to fill ``count`` it stays last, at ``-inf``."""
    if exclude is None:
        return scores[:, :count], indices[:, :count]
    rows = torch.tensor([-1 if row is None else row for row in exclude], dtype=indices.dtype)
    hit = indices == rows[:, None]
    order = torch.argsort(hit.to(torch.int8), dim=1, stable=True)  # the others first, in order
    scores, indices = scores.gather(1, order)[:, :count], indices.gather(1, order)[:, :count]
    scores = scores.masked_fill(indices == rows[:, None], float("-inf"))
    return scores.contiguous(), indices.contiguous()
