"""Image similarity with a Siamese network and triplet loss, on PyTorch Lightning.

The main classes import lazily, so ``import lightning_siamese`` stays cheap (no torch, no
Lightning) until one of them is used::

    from lightning_siamese import EmbeddingNet, SiameseDataModule, SiameseModel, TripletLoss
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from lightning_siamese import moved_modules

__version__ = "0.2.0"

#: Public name -> the module that defines it.
_PUBLIC = {
    "SiameseModel": "lightning_siamese.training.model",
    "SiameseDataModule": "lightning_siamese.data.datamodule",
    "EmbeddingNet": "lightning_siamese.models.embedding",
    "TripletLoss": "lightning_siamese.models.losses",
    "Pair": "lightning_siamese.data.pairs",
    "PairReport": "lightning_siamese.data.pairs",
    "Problem": "lightning_siamese.data.pairs",
    "discover_pairs": "lightning_siamese.data.pairs",
    "UserError": "lightning_siamese.errors",
}

__all__ = [
    "EmbeddingNet",
    "Pair",
    "PairReport",
    "Problem",
    "SiameseDataModule",
    "SiameseModel",
    "TripletLoss",
    "UserError",
    "__version__",
    "discover_pairs",
]

if TYPE_CHECKING:
    from lightning_siamese.data.datamodule import SiameseDataModule
    from lightning_siamese.data.pairs import Pair, PairReport, Problem, discover_pairs
    from lightning_siamese.errors import UserError
    from lightning_siamese.models.embedding import EmbeddingNet
    from lightning_siamese.models.losses import TripletLoss
    from lightning_siamese.training.model import SiameseModel


# Old module paths (lightning_siamese.checkpoints, ...) of saved configs and scripts still import.
moved_modules.install()


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(import_module(_PUBLIC[name]), name)
        globals()[name] = value  # once imported, a plain attribute
        return value
    raise AttributeError(f"module 'lightning_siamese' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
