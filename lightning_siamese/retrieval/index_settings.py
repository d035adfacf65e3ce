"""The settings of a gallery search: exact or an approximate index, and that index's parameters.
Plain Python (the command line reads them without importing torch or faiss)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from lightning_siamese.errors import ConfigError

IndexKind = Literal["auto", "exact", "ivf", "hnsw"]
KINDS = ("auto", "exact", "ivf", "hnsw")
#: ``auto`` searches exactly below this many gallery images and through ``ivf`` from there:
#: exact search of 100k 256-d vectors takes a few milliseconds per query.
AUTO_SIZE = 100_000
#: faiss asks for at least this many training vectors per IVF cell.
MIN_POINTS_PER_LIST = 39


@dataclass(frozen=True)
class IndexSettings:
    """How an approximate index is built and searched.

    Args:
        kind: ``ivf`` or ``hnsw`` (see the module's docstring).
        lists: IVF cells; default ``4 * sqrt(N)``, at most ``N / 39``.
        probes: IVF cells scanned per query; default ``lists / 128`` (at least 8): the more,
            the closer to exact and the slower.
        neighbors: HNSW links per vector (its ``M``).
        ef_construction: HNSW candidates explored per vector while building.
        ef_search: HNSW candidates explored per query (at least ``k``; more: closer to exact).
    """

    kind: str = "ivf"
    lists: int | None = None
    probes: int | None = None
    neighbors: int = 32
    ef_construction: int = 80
    ef_search: int = 128

    def __post_init__(self) -> None:
        if self.kind not in ("ivf", "hnsw"):
            raise ConfigError(f"approximate index kind must be ivf or hnsw, got {self.kind!r}")
        for name in ("lists", "probes", "neighbors", "ef_construction", "ef_search"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"index {name} must be at least 1, got {value}")

    def build_key(self) -> dict[str, Any]:
        """The settings that shape the index: a file built with others is rebuilt."""
        if self.kind == "ivf":
            return {"kind": "ivf", "lists": self.lists}
        return {
            "kind": "hnsw",
            "neighbors": self.neighbors,
            "ef_construction": self.ef_construction,
        }


def default_lists(count: int) -> int:
    """IVF cells for ``count`` vectors: ``4 * sqrt(count)``, with 39+ training vectors each."""
    return max(1, min(round(4 * math.sqrt(count)), count // MIN_POINTS_PER_LIST))


def default_probes(lists: int) -> int:
    """IVF cells scanned per query by default: ``lists / 128``, at least 8."""
    return max(8, lists // 128)
