"""Approximate nearest neighbours for galleries past exact search: a faiss IVF or HNSW index
over the unit-length embeddings (inner product = cosine), kept up to date as files change.

Needs faiss (``pip install lightning-siamese[faiss]``). The index lives in one file beside the
gallery's embedding cache (``gallery-<model>.ivf.pt`` next to ``gallery-<model>.pt``) with the
path of every image it holds and the content digest of the file it was embedded from
(:func:`~lightning_siamese.files.content_digest`), so a later search adds the new files, drops
the removed ones, and re-adds the ones whose content changed (whatever their size and mtime say)
instead of rebuilding:

* ``ivf`` (``IndexIVFFlat``): k-means cells; a query scans the ``probes`` cells nearest to it.
  Removal is native. It is rebuilt (re-trained) when the gallery has grown or shrunk 4x since
  its cells were trained, since the cells then no longer fit the data.
* ``hnsw`` (``IndexHNSWFlat``): a navigable graph; a query explores ``ef_search`` candidates.
  It cannot delete: a removed or changed file rebuilds it (prefer ``ivf`` for galleries that
  change). Slow to build on few cores.

Recall against exact search and speed on 1M vectors: ``benchmarks/ann_index.py`` and
``docs/benchmarks.md``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lightning_siamese.errors import ConfigError
from lightning_siamese.files import atomic_write
from lightning_siamese.retrieval.index_settings import (
    AUTO_SIZE,
    KINDS,
    IndexSettings,
    default_lists,
    default_probes,
)
from lightning_siamese.retrieval.nearest import drop_excluded, faiss_module

#: Version of the index file's layout; a file of another version is rebuilt.
INDEX_FORMAT = 2
#: IVF cells are trained on at most this many vectors per cell (a random sample).
TRAIN_POINTS_PER_LIST = 64


def require_faiss() -> ModuleType:
    faiss = faiss_module()
    if faiss is None:
        raise ConfigError(
            "an approximate index needs faiss: pip install 'lightning-siamese[faiss]' "
            "(or search exactly with --index exact)"
        )
    return faiss


def unit_rows(embeddings: torch.Tensor) -> np.ndarray:
    """Float32, unit-length, contiguous rows, as faiss takes them."""
    return F.normalize(embeddings.detach().float().cpu(), dim=1).contiguous().numpy()


class ApproximateIndex:
    """A faiss index over gallery embeddings, each vector known by its image's path.

    Use :meth:`build`, :meth:`load`, then :meth:`update` and :meth:`search`.
    """

    def __init__(
        self,
        settings: IndexSettings,
        index: Any,
        ids: dict[str, int],
        digests: dict[str, str],
        next_id: int,
        trained_size: int,
    ) -> None:
        self.settings = settings
        self.index = index
        #: path -> the vector's id in the index, and the content digest it was embedded from.
        self.ids, self.digests = ids, digests
        self.next_id = next_id
        self.trained_size = trained_size
        #: Gallery row of each id for the list ``rows_for`` (-1: none), made when needed.
        self.row_of_id: np.ndarray | None = None
        self.rows_for: Sequence[str] | None = None
        #: What the last :meth:`build` or :meth:`update` did, for the user.
        self.note = ""
        self.seconds = 0.0

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def build(
        cls,
        settings: IndexSettings,
        paths: Sequence[str],
        digests: Mapping[str, str],
        embeddings: torch.Tensor,
        seed: int = 0,
    ) -> ApproximateIndex:
        """A new index of ``embeddings`` (row ``i`` is the image ``paths[i]``, whose content
        digest is ``digests[paths[i]]``)."""
        faiss = require_faiss()
        faiss.omp_set_num_threads(torch.get_num_threads())
        started = time.perf_counter()
        vectors = unit_rows(embeddings)
        count, dim = vectors.shape
        if count == 0:
            raise ConfigError("an approximate index needs at least one image")
        if settings.kind == "ivf":
            lists = min(settings.lists or default_lists(count), max(1, count))
            index = faiss.IndexIVFFlat(
                faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT
            )
            sample = min(count, TRAIN_POINTS_PER_LIST * lists)
            rows = np.random.default_rng(seed).choice(count, sample, replace=False)
            index.cp.seed = seed
            index.train(vectors[np.sort(rows)])
        else:
            index = faiss.IndexIDMap2(
                faiss.IndexHNSWFlat(dim, settings.neighbors, faiss.METRIC_INNER_PRODUCT)
            )
            faiss.downcast_index(index.index).hnsw.efConstruction = settings.ef_construction
        ids = np.arange(count, dtype=np.int64)
        index.add_with_ids(vectors, ids)
        built = cls(
            settings,
            index,
            dict(zip(paths, ids.tolist(), strict=True)),
            {p: digests[p] for p in paths},
            count,
            count,
        )
        built.row_of_id, built.rows_for = ids, paths
        built.seconds = time.perf_counter() - started
        built.note = f"built {built.describe()} in {built.seconds:.1f} s"
        return built

    def describe(self) -> str:
        if self.settings.kind == "ivf":
            return f"an IVF index ({len(self):,} images, {self.index.nlist:,} cells)"
        return f"an HNSW index ({len(self):,} images, M={self.settings.neighbors})"

    def update(
        self,
        paths: Sequence[str],
        digests: Mapping[str, str],
        embeddings: torch.Tensor,
    ) -> ApproximateIndex:
        """The index for the gallery now (``paths``, their content digests and embeddings):
        this one with new files added, removed ones dropped and changed ones (another digest)
        re-added, or a rebuilt one when that is needed (see the module's docstring). ``note``
        says which."""
        started = time.perf_counter()
        current = {path: row for row, path in enumerate(paths)}
        gone = [p for p in self.ids if p not in current or digests[p] != self.digests[p]]
        gone_set = set(gone)
        new = [p for p in paths if p not in self.ids or p in gone_set]
        size, trained = len(self) - len(gone) + len(new), self.trained_size
        if self.settings.kind == "hnsw" and gone:
            why = f"{len(gone):,} images removed or changed, which HNSW cannot delete"
        elif self.settings.kind == "ivf" and not (trained / 4 <= size <= 4 * trained):
            why = f"the gallery is now {size:,} images, its cells were trained on {trained:,}"
        else:
            why = ""
        if why:
            rebuilt = ApproximateIndex.build(self.settings, paths, digests, embeddings)
            rebuilt.note = f"rebuilt {rebuilt.describe()} in {rebuilt.seconds:.1f} s ({why})"
            return rebuilt
        require_faiss().omp_set_num_threads(torch.get_num_threads())
        if gone:
            self.index.remove_ids(np.array([self.ids.pop(p) for p in gone], dtype=np.int64))
            for path in gone:
                del self.digests[path]
        if new:
            ids = np.arange(self.next_id, self.next_id + len(new), dtype=np.int64)
            rows = torch.tensor([current[p] for p in new], dtype=torch.long)
            self.index.add_with_ids(unit_rows(embeddings[rows]), ids)
            self.ids.update(zip(new, ids.tolist(), strict=True))
            self.digests.update({p: digests[p] for p in new})
            self.next_id += len(new)
        self.row_of_id, self.rows_for = self._rows(paths), paths
        self.seconds = time.perf_counter() - started
        removed = len(gone_set - set(new))
        self.note = (
            f"updated {self.describe()}: {len(new):,} added (new or changed), {removed:,} "
            f"removed in {self.seconds:.1f} s"
            if gone or new
            else f"using {self.describe()}"
        )
        return self

    def search(
        self,
        queries: torch.Tensor,
        k: int,
        paths: Sequence[str],
        exclude: Sequence[int | None] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Approximately the ``k`` gallery rows most cosine-similar to each query, as
        :func:`~lightning_siamese.retrieval.nearest.top_k` gives them (rows of ``paths``, the
        gallery this index was last updated for). A result the index could not fill (too
        few vectors in the scanned cells) scores ``-inf``."""
        faiss = require_faiss()
        faiss.omp_set_num_threads(torch.get_num_threads())
        count = min(k, len(paths))
        wanted = min(count + (exclude is not None), len(self))
        if self.settings.kind == "ivf":
            self.index.nprobe = self.settings.probes or default_probes(self.index.nlist)
            self.index.nprobe = min(self.index.nprobe, self.index.nlist)
        else:
            hnsw = faiss.downcast_index(self.index.index).hnsw
            hnsw.efSearch = max(self.settings.ef_search, wanted)
        scores, ids = self.index.search(unit_rows(queries), max(1, wanted))
        if self.row_of_id is None or self.rows_for is not paths:
            self.row_of_id, self.rows_for = self._rows(paths), paths
        rows = np.where(ids >= 0, self.row_of_id[np.maximum(ids, 0)], -1)
        indices = torch.from_numpy(rows.astype(np.int64))
        values = torch.from_numpy(scores).masked_fill(indices < 0, float("-inf"))
        values, indices = drop_excluded(values, indices, count, exclude)
        if indices.shape[1] < count:  # fewer indexed vectors than k
            pad = count - indices.shape[1]
            values = torch.cat([values, values.new_full((len(values), pad), float("-inf"))], 1)
            indices = torch.cat([indices, indices.new_full((len(indices), pad), -1)], 1)
        return values, indices

    def _rows(self, paths: Sequence[str]) -> np.ndarray:
        rows = np.full(self.next_id, -1, dtype=np.int64)
        for row, path in enumerate(paths):
            if path in self.ids:
                rows[self.ids[path]] = row
        return rows

    # Files -----------------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write the index with its paths and digests, atomically (``weights_only`` loads it)."""
        faiss = require_faiss()
        content = {
            "format": INDEX_FORMAT,
            "settings": asdict(self.settings),
            "paths": list(self.ids),
            "ids": torch.tensor(list(self.ids.values()), dtype=torch.int64),
            "digests": [self.digests[p] for p in self.ids],
            "next_id": self.next_id,
            "trained_size": self.trained_size,
            "index": torch.from_numpy(faiss.serialize_index(self.index)),
        }
        with atomic_write(path) as handle:
            torch.save(content, handle)

    @classmethod
    def load(cls, path: Path, settings: IndexSettings, notes: list[str]) -> ApproximateIndex | None:
        """The index stored at ``path``, or None when it is missing, unreadable (said in
        ``notes``), of another format, or built with other settings than ``settings``."""
        if not path.is_file():
            return None
        faiss = require_faiss()
        try:
            content = torch.load(path, map_location="cpu", weights_only=True)
            stored = IndexSettings(**content["settings"])
            if content["format"] != INDEX_FORMAT or stored.build_key() != settings.build_key():
                return None
            index = faiss.deserialize_index(content["index"].numpy())
            paths, ids, digests = content["paths"], content["ids"].tolist(), content["digests"]
            if not (len(paths) == len(ids) == len(digests) == index.ntotal):
                raise ValueError("the index and its paths disagree")
        except Exception as error:
            notes.append(f"note: ignoring unreadable index {path} ({type(error).__name__})")
            return None
        known = dict(zip(paths, ids, strict=True))
        digest = dict(zip(paths, digests, strict=True))
        return cls(settings, index, known, digest, content["next_id"], content["trained_size"])


def index_path(cache_file: Path, kind: str) -> Path:
    """Where a gallery's index lives: beside its embedding cache, ``<cache stem>.<kind>.pt``."""
    return cache_file.with_name(f"{cache_file.stem}.{kind}.pt")


def resolve_kind(kind: str, gallery_size: int) -> str:
    """``exact``, ``ivf`` or ``hnsw`` for ``kind`` (``auto``: :data:`AUTO_SIZE`; exact when
    faiss is missing)."""
    if kind not in KINDS:
        raise ConfigError(f"index must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind != "auto":
        return kind
    return "ivf" if gallery_size >= AUTO_SIZE and faiss_module() is not None else "exact"
