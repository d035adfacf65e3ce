"""The data wing: image files, pair folders, splits, triplets, the DataModule, demo builders.

``SiameseDataModule`` is importable from here (imported on first use: it needs Lightning).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from lightning_siamese.moved_modules import moved_name

__all__ = ["SiameseDataModule"]


def __getattr__(name: str) -> Any:
    if name == "SiameseDataModule":  # also the path that configs of 0.1 name
        return import_module("lightning_siamese.data.datamodule").SiameseDataModule
    # The other names of the lightning_siamese.data module of 0.1, with the new path.
    return moved_name("lightning_siamese.data", name, ("lightning_siamese.data.run_split",))
