"""Image similarity with a Siamese network and triplet loss, on PyTorch Lightning."""

from lightning_siamese.pairs import Pair, PairReport, Problem, discover_pairs

__version__ = "0.1.0"

__all__ = ["Pair", "PairReport", "Problem", "__version__", "discover_pairs"]
