"""Search: rank the images of a gallery folder by cosine similarity to query images, and draw
the results. Plain arguments in, a :class:`SearchResult` out; the command only prints it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from lightning_siamese.applications.gallery import Gallery, build_gallery
from lightning_siamese.applications.inference import (
    embed_files,
    gather_rows,
    load_model,
    pick_device,
)
from lightning_siamese.data.folders import ImageListing, image_inputs
from lightning_siamese.data.images import thumbnail
from lightning_siamese.errors import ConfigError, InputError
from lightning_siamese.files import display_path
from lightning_siamese.retrieval.ann_index import ApproximateIndex, index_path, resolve_kind
from lightning_siamese.retrieval.index_settings import IndexSettings
from lightning_siamese.retrieval.nearest import top_k
from lightning_siamese.retrieval.plots import plot_retrieval, save_figure
from lightning_siamese.retrieval.reranking import (
    check_rerank,
    csls_scores,
    gallery_offset,
    rerank_note,
    resolve_rerank,
)
from lightning_siamese.training.model import SiameseModel

#: Most queries (rows) and matches (columns) drawn in the montage.
MONTAGE_ROWS = 16
MONTAGE_MATCHES = 16


@dataclass
class Queries:
    """The readable query images, their embeddings and their own gallery row (or None)."""

    paths: list[Path]
    embeddings: torch.Tensor
    gallery_rows: list[int | None]
    #: (path, reason) of every query file that could not be read.
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class SearchResult:
    """What a search found: the gallery, the readable queries and each one's matches
    (``(path relative to the gallery, cosine score)``, best first)."""

    gallery: Gallery
    queries: Queries
    matches: list[list[tuple[str, float]]]
    top_k: int
    #: ``exact``, ``ivf`` or ``hnsw``, and what was done to the approximate index.
    index: str = "exact"
    index_note: str = ""


def embed_queries(
    model: SiameseModel,
    query: str | Path,
    gallery: Gallery,
    batch_size: int = 64,
    num_workers: int = 0,
    listing: ImageListing | None = None,
) -> Queries:
    """The query image, or every image under the query folder, embedded by ``model``; a query
    that is a gallery image reuses the gallery's embedding. ``listing`` is
    the listing of ``query`` when the caller has it already.

    Raises:
        InputError: ``query`` is missing or holds no image file.
    """
    listing = listing or image_inputs(query, "query")
    paths = listing.paths()
    root = gallery.root.resolve()
    rows = {path: row for row, path in enumerate(gallery.paths)}
    own: list[int | None] = []
    for path in paths:
        try:
            relative = path.resolve().relative_to(root).as_posix()
        except ValueError:
            relative = None
        own.append(rows.get(relative) if relative is not None else None)
    todo = [i for i, row in enumerate(own) if row is None]
    result = embed_files(model, [paths[i] for i in todo], batch_size, num_workers)
    fresh, kept, failed = result.outputs, result.indices, result.unreadable
    fresh_rows = {todo[i]: row for row, i in enumerate(kept)}
    keep = [i for i in range(len(paths)) if own[i] is not None or i in fresh_rows]
    in_gallery = [row for row, i in enumerate(keep) if own[i] is not None]
    embedded = [row for row, i in enumerate(keep) if own[i] is None]
    gallery_rows = {i: row for i, row in enumerate(own) if row is not None}
    embeddings = gather_rows(
        len(keep),
        gallery.embeddings.shape[1],
        [
            (gallery.embeddings, in_gallery, [gallery_rows[keep[row]] for row in in_gallery]),
            (fresh, embedded, [fresh_rows[keep[row]] for row in embedded]),
        ],
    )
    return Queries(
        paths=[paths[i] for i in keep],
        embeddings=embeddings,
        gallery_rows=[own[i] for i in keep],
        unreadable=[(str(paths[todo[i]]), reason) for i, reason in failed],
        skipped=listing.skipped,
    )


def search(
    checkpoint: str | Path,
    gallery: str | Path,
    query: str | Path,
    top_k_matches: int = 5,
    include_self: bool = False,
    use_cache: bool = True,
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | None = None,
    index: str = "auto",
    index_settings: IndexSettings | None = None,
    rerank: str | None = None,
    rerank_k: int | None = None,
) -> SearchResult:
    """The ``top_k_matches`` gallery images most similar to each query image by cosine: exact,
    or through an approximate index for large galleries.

    Args:
        checkpoint: a checkpoint written by ``fit``.
        gallery: folder searched, recursively (the rule of
            :func:`~lightning_siamese.data.folders.list_images`).
        query: an image file, or a folder of them.
        include_self: keep a query that is a gallery image in its own results.
        use_cache: reuse and update the gallery's embedding cache (see
            :mod:`~lightning_siamese.applications.gallery`).
        cache_dir: where the cache lives instead of ``GALLERY/.lightning-siamese``.
        device: ``cpu``, ``cuda:0`` ...; default: the first GPU when there is one.
        index: ``exact``, ``ivf`` or ``hnsw`` (a faiss index stored beside the cache and
            updated as files change: :mod:`~lightning_siamese.retrieval.ann_index`), or
            ``auto``: ``ivf`` from :data:`~lightning_siamese.retrieval.index_settings.AUTO_SIZE`
            images when faiss is installed, exact otherwise.
        index_settings: the approximate index's parameters (their defaults when None).
        rerank: ``csls`` re-ranks the exact search, lowering the gallery's hubs as told by the
            queries (at least ``rerank_k`` of them: a folder) and scores matches by CSLS
            (:mod:`~lightning_siamese.retrieval.reranking`); ``none``: plain cosine; None:
            the checkpoint's own setting (``model.rerank``), skipped with a note where it
            cannot run (fewer queries than ``rerank_k``, an approximate index asked for).
        rerank_k: CSLS's nearest queries per gallery image (None: the checkpoint's).

    Raises:
        InputError: a missing gallery or query, or no readable image in one.
        CheckpointError: the checkpoint cannot be used.
        DeviceError: ``device`` is not on this machine.
    """
    if not (isinstance(top_k_matches, int) and top_k_matches >= 1):
        raise ConfigError(f"top_k_matches must be an integer >= 1, got {top_k_matches!r}")
    check_rerank(rerank, rerank_k)  # as given, before any work
    if rerank not in (None, "none") and index not in ("auto", "exact"):
        raise ConfigError(f"re-ranking runs on exact search: drop --index {index}, or --rerank")
    gallery, query = Path(gallery), Path(query)
    pick_device(device)  # a device that is not there, named before any work
    # Wrong or empty folders are reported before the model is loaded.
    gallery_listing = image_inputs(gallery, "gallery", folder_only=True)
    query_listing = image_inputs(query, "query")
    model = load_model(checkpoint, device)
    found = build_gallery(
        model, gallery, use_cache, cache_dir, batch_size, num_workers, gallery_listing
    )
    if not found.paths:
        raise InputError(f"gallery {gallery}: {_none_readable(found.unreadable)}")
    queries = embed_queries(model, query, found, batch_size, num_workers, query_listing)
    if not queries.paths:
        raise InputError(f"query {query}: {_none_readable(queries.unreadable)}")
    exclude = None if include_self else queries.gallery_rows
    asked = rerank is not None
    rerank, rerank_k = resolve_rerank(rerank, rerank_k, model.hparams)
    skipped = ""
    cannot = index not in ("auto", "exact") or len(queries.paths) < rerank_k
    if not asked and rerank != "none" and cannot:
        skipped = (
            f"; the checkpoint's {rerank} re-ranking skipped (it needs exact search and "
            f"{rerank_k} or more queries)"
        )
        rerank = "none"
    kind = "exact" if rerank != "none" else resolve_kind(index, len(found.paths))
    note = rerank_note(rerank, rerank_k)
    if kind == "exact":
        offset = gallery_offset(rerank, queries.embeddings, found.embeddings, rerank_k, exclude)
        scores, indices = top_k(
            queries.embeddings,
            found.embeddings,
            top_k_matches,
            exclude,
            device=pick_device(device),
            gallery_offset=offset,
        )
        if offset is not None:
            scores = csls_scores(
                scores.cpu(), queries.embeddings, found.embeddings, rerank_k, exclude
            )
    else:
        approximate = gallery_index(found, replace(index_settings or IndexSettings(), kind=kind))
        scores, indices = approximate.search(
            queries.embeddings, top_k_matches, found.paths, exclude
        )
        note = approximate.note
    note = (note + skipped).lstrip("; ")
    matches = [
        [
            (found.paths[index], score)
            for index, score in zip(row_indices, row_scores, strict=True)
            if score != float("-inf")
        ]
        for row_indices, row_scores in zip(indices.tolist(), scores.tolist(), strict=True)
    ]
    return SearchResult(found, queries, matches, top_k_matches, kind, note)


def gallery_index(gallery: Gallery, settings: IndexSettings) -> ApproximateIndex:
    """The gallery's approximate index: the stored one brought up to date, or a new one; saved
    beside the gallery's embedding cache when it changed (kept in memory only without one)."""
    path = index_path(gallery.cache_file, settings.kind) if gallery.cache_file else None
    stored = ApproximateIndex.load(path, settings, gallery.notes) if path else None
    if stored is None:
        index = ApproximateIndex.build(settings, gallery.paths, gallery.digests, gallery.embeddings)
    else:
        index = stored.update(gallery.paths, gallery.digests, gallery.embeddings)
    if path is not None and not index.note.startswith("using"):
        try:
            index.save(path)
        except OSError as error:
            gallery.notes.append(f"note: could not write the index {path}: {error}")
    return index


def _none_readable(unreadable: Sequence[tuple[str, str]], shown: int = 3) -> str:
    """``no readable image (2 unreadable: a.png: reason; b.png: reason)``."""
    listed = "; ".join(f"{display_path(path)}: {reason}" for path, reason in unreadable[:shown])
    more = f"; and {len(unreadable) - shown} more" if len(unreadable) > shown else ""
    return f"no readable image ({len(unreadable)} unreadable: {listed}{more})"


def _short(name: str, limit: int = 22) -> str:
    return name if len(name) <= limit else f"{name[: limit - 1]}…"


def write_montage(out: str | Path, result: SearchResult) -> str:
    """Draw the first queries and their matches into ``out`` (PNG, written whole: claim it
    first with :func:`~lightning_siamese.outputs.claim_file`); the line to print about it."""
    out = Path(out)
    queries, matches = result.queries.paths, result.matches
    shown = min(len(queries), MONTAGE_ROWS)
    rows = []
    for path, found in zip(queries[:shown], matches[:shown], strict=True):
        cells = [
            (
                thumbnail(result.gallery.root / match, 128),
                f"{score:.4f}\n{_short(Path(match).name)}",
                None,
            )
            for match, score in found[:MONTAGE_MATCHES]
        ]
        rows.append((thumbnail(path, 128), _short(path.name), cells))
    save_figure(plot_retrieval(rows), out)
    notes = []
    if shown < len(queries):
        notes.append(f"first {shown} of {len(queries):,} queries shown")
    if any(len(found) > MONTAGE_MATCHES for found in matches[:shown]):
        notes.append(f"top {MONTAGE_MATCHES} matches shown")
    return f"montage: {out}" + (f" ({'; '.join(notes)})" if notes else "")
