"""The retrieval wing (pure torch): ranks, top-k, split metrics, approximate indexes, reports.

Its main functions are importable from here (imported on first use), as they were from the
``lightning_siamese.retrieval`` module of 0.1.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

#: Name -> the module of the wing that defines it.
_FACE = {
    "Ranks": "ranks",
    "retrieval_ranks": "ranks",
    "rank_metrics": "ranks",
    "RECALL_AT": "ranks",
    "TIE_TOLERANCE": "ranks",
    "top_k": "nearest",
    "drop_excluded": "nearest",
    "faiss_module": "nearest",
    "FAISS_MIN_SCORES": "nearest",
    "split_metrics": "metrics",
}
__all__ = sorted(_FACE)


def __getattr__(name: str) -> Any:
    if name in _FACE:
        return getattr(import_module(f"lightning_siamese.retrieval.{_FACE[name]}"), name)
    raise AttributeError(f"module 'lightning_siamese.retrieval' has no attribute {name!r}")
