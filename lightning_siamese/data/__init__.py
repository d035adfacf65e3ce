"""The data wing: image files, pair folders, splits, triplets, the DataModule, demo builders.

``SiameseDataModule`` is importable from here (imported on first use: it needs Lightning).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["SiameseDataModule"]


def __getattr__(name: str) -> Any:
    if name == "SiameseDataModule":  # also the path that configs of 0.1 name
        return import_module("lightning_siamese.data.datamodule").SiameseDataModule
    raise AttributeError(f"module 'lightning_siamese.data' has no attribute {name!r}")
