"""``lightning-siamese search``: rank a gallery of images by cosine similarity to query images.

The gallery's embeddings are cached next to it, in ``GALLERY/.lightning-siamese/``, one file per
checkpoint: a later search embeds only new or changed files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from PIL import Image

from lightning_siamese.images import IMAGE_EXTENSIONS, load_image
from lightning_siamese.inference import CheckpointError, embed_paths, load_model, pick_device
from lightning_siamese.pairs import display_path

if TYPE_CHECKING:
    from lightning_siamese.model import SiameseModel

#: Hidden folder inside the gallery that holds the embedding caches.
CACHE_FOLDER = ".lightning-siamese"
#: Version of the cache file's layout; a file of another version is rebuilt.
CACHE_FORMAT = 1
#: Most queries (rows) and matches (columns) drawn in the montage.
MONTAGE_ROWS = 16
MONTAGE_MATCHES = 16


class SearchError(ValueError):
    """A problem with the command's inputs, reported as one ``error:`` line."""


@dataclass(frozen=True)
class ImageFile:
    """An image file found under a folder: path relative to it (POSIX form), size, mtime."""

    relative: str
    size: int
    mtime_ns: int


@dataclass
class Gallery:
    """The gallery's usable images and their embeddings, with what the cache contributed."""

    root: Path
    paths: list[str]
    embeddings: torch.Tensor
    cached: int = 0
    embedded: int = 0
    #: (relative path, reason) of every file that could not be read.
    unreadable: list[tuple[str, str]] = field(default_factory=list)


# Listing ---------------------------------------------------------------------------------------


def list_images(root: Path) -> list[ImageFile]:
    """Every image file under ``root``, recursively, sorted; hidden files and folders skipped.

    Symbolic links to files are followed, links to folders are not (no loops).
    """
    found: list[ImageFile] = []
    folders = [(root, "")]
    while folders:
        folder, prefix = folders.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as error:
            print(f"warning: skipped unreadable folder {folder}: {error}", file=sys.stderr)
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                folders.append((Path(entry.path), f"{prefix}{entry.name}/"))
            elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
                try:
                    stat = entry.stat()  # follows a link
                except OSError as error:  # a broken link or a link loop
                    reason = error.strerror or type(error).__name__
                    shown = display_path(entry.path)
                    print(f"warning: skipped {shown}: {reason} (fix or remove it)", file=sys.stderr)
                    continue
                if entry.is_file():
                    found.append(ImageFile(prefix + entry.name, stat.st_size, stat.st_mtime_ns))
    return sorted(found, key=lambda image: image.relative)


def gallery_images(gallery: Path) -> list[ImageFile]:
    """The gallery's images; :class:`SearchError` when the folder is missing or has none."""
    if not gallery.is_dir():
        raise SearchError(f"gallery {gallery}: no such folder")
    images = list_images(gallery)
    if not images:
        extensions = " ".join(sorted(IMAGE_EXTENSIONS))
        raise SearchError(f"gallery {gallery}: no image file in it ({extensions})")
    return images


def query_paths(query: Path) -> list[Path]:
    """One image file, or every image under a folder; :class:`SearchError` when there is none."""
    if query.is_file():
        return [query]
    if not query.is_dir():
        raise SearchError(f"query {query}: no such file or folder")
    paths = [query / image.relative for image in list_images(query)]
    if not paths:
        raise SearchError(f"query {query}: no image file in the folder")
    return paths


# Embedding -------------------------------------------------------------------------------------


def _unreadable_reason(model: SiameseModel, path: Path) -> str | None:
    """Why the file cannot be read and preprocessed, or None when it can."""
    try:
        model.transform()(load_image(path))
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return None


def embed_files(
    model: SiameseModel,
    paths: Sequence[Path],
    batch_size: int = 64,
    num_workers: int = 0,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, list[int], list[tuple[int, str]]]:
    """Embed the readable files among ``paths``, skipping the unreadable ones.

    Files go through :func:`~lightning_siamese.inference.embed_paths` in chunks; a chunk that
    fails is split in halves until the failing file is alone, so one bad file costs a few
    re-runs, not a crash.

    Returns:
        the embeddings (K, D) of the readable files in order, their indices into ``paths``, and
        ``(index, reason)`` for each unreadable file.
    """
    chunk_size = chunk_size or max(16 * batch_size, 1024)
    pieces: list[tuple[list[int], torch.Tensor]] = []
    unreadable: list[tuple[int, str]] = []

    def run(indices: list[int]) -> None:
        workers = num_workers if len(indices) > batch_size else 0
        try:
            rows = embed_paths(model, [paths[i] for i in indices], batch_size, workers)
        except Exception:
            if len(indices) > 1:
                half = len(indices) // 2
                run(indices[:half])
                run(indices[half:])
                return
            reason = _unreadable_reason(model, paths[indices[0]])
            if reason is None:  # the file is fine: something else went wrong
                raise
            unreadable.append((indices[0], reason))
            return
        pieces.append((indices, rows))

    for start in range(0, len(paths), chunk_size):
        run(list(range(start, min(start + chunk_size, len(paths)))))
    if not pieces:
        return torch.zeros(0, model.hparams["embedding_dim"]), [], unreadable
    # The halves run in order, so the pieces are in file order already.
    kept = [index for indices, _ in pieces for index in indices]
    return torch.cat([rows for _, rows in pieces]), kept, unreadable


def _gather(
    count: int, dim: int, sources: Sequence[tuple[torch.Tensor, list[int], list[int]]]
) -> torch.Tensor:
    """A (count, dim) tensor filled from ``(source, target rows, source rows)`` triples."""
    result = torch.empty(count, dim)
    for source, target_rows, source_rows in sources:
        if target_rows:
            result[torch.tensor(target_rows)] = source[torch.tensor(source_rows)]
    return result


# Cache -----------------------------------------------------------------------------------------


def checkpoint_fingerprint(checkpoint: Path) -> str:
    """A short hash of the checkpoint's resolved path, size and mtime (not of its content)."""
    resolved = checkpoint.resolve()
    stat = resolved.stat()
    text = f"{resolved}\n{stat.st_size}\n{stat.st_mtime_ns}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _gallery_writable(gallery: Path) -> bool:
    """Whether the cache folder inside the gallery exists or can be made, and is writable."""
    folder = gallery / CACHE_FOLDER
    try:
        folder.mkdir(exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/lightning-siamese/search`` (``~/.cache/...`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lightning-siamese" / "search"


def cache_path(gallery: Path, fingerprint: str, cache_dir: Path | None = None) -> Path:
    """Where the gallery's cache for one checkpoint lives.

    ``GALLERY/.lightning-siamese/gallery-<fingerprint>.pt``, unless ``cache_dir`` is given; in
    another folder the name also carries a hash of the gallery's resolved path.
    """
    if cache_dir is None:
        return gallery / CACHE_FOLDER / f"gallery-{fingerprint}.pt"
    key = hashlib.sha256(str(gallery.resolve()).encode()).hexdigest()[:16]
    return cache_dir / f"gallery-{key}-{fingerprint}.pt"


def choose_cache_path(
    gallery: Path, fingerprint: str, cache_dir: Path | None
) -> tuple[Path, str | None]:
    """The cache file to use and a note to print when it is not the default one.

    An explicit ``cache_dir`` wins; otherwise the gallery's own folder, or the user cache folder
    when the gallery is not writable.
    """
    if cache_dir is not None:
        return cache_path(gallery, fingerprint, cache_dir), None
    if _gallery_writable(gallery):
        return cache_path(gallery, fingerprint), None
    fallback = cache_path(gallery, fingerprint, default_cache_dir())
    return fallback, f"note: gallery {gallery} is not writable; caching embeddings in {fallback}"


def load_cache(path: Path, fingerprint: str, image_size: int) -> dict[str, Any] | None:
    """The cache file's content, or None when it is missing, unreadable or for another model."""
    if not path.is_file():
        return None
    try:
        cache = torch.load(path, map_location="cpu", weights_only=True)
        paths, stats, embeddings = cache["paths"], cache["stats"], cache["embeddings"]
        bad = cache["unreadable"]
        valid = (
            cache["format"] == CACHE_FORMAT
            and cache["checkpoint"] == fingerprint
            and cache["image_size"] == image_size
            and len(paths) == len(stats) == len(embeddings)
            and len(bad["paths"]) == len(bad["stats"]) == len(bad["reasons"])
        )
    except Exception as error:
        print(f"note: ignoring unreadable cache {path} ({type(error).__name__})", file=sys.stderr)
        return None
    return cache if valid else None


def update_gallery(
    model: SiameseModel,
    root: Path,
    images: Sequence[ImageFile],
    cache: dict[str, Any] | None,
    batch_size: int = 64,
    num_workers: int = 0,
) -> tuple[Gallery, bool]:
    """The gallery's embeddings: unchanged files from ``cache``, the others embedded now.

    A file is unchanged when its size and mtime match the cache's. Files recorded as unreadable
    stay skipped until they change.

    Returns:
        the gallery and whether it differs from ``cache`` (so the cache needs rewriting).
    """
    old: dict[str, tuple[int, tuple[int, int]]] = {}
    old_bad: dict[str, tuple[tuple[int, int], str]] = {}
    if cache is not None:
        stats = cache["stats"].tolist()
        old = {path: (row, tuple(stats[row])) for row, path in enumerate(cache["paths"])}
        bad = cache["unreadable"]
        bad_stats = bad["stats"].tolist()
        old_bad = {
            path: (tuple(bad_stats[i]), bad["reasons"][i]) for i, path in enumerate(bad["paths"])
        }

    reused: dict[int, int] = {}  # position in images -> cache row
    unreadable: dict[int, str] = {}
    todo: list[int] = []
    for position, image in enumerate(images):
        stat = (image.size, image.mtime_ns)
        if image.relative in old and old[image.relative][1] == stat:
            reused[position] = old[image.relative][0]
        elif image.relative in old_bad and old_bad[image.relative][0] == stat:
            unreadable[position] = old_bad[image.relative][1]
        else:
            todo.append(position)
    cached_bad = len(unreadable)

    fresh, kept, failed = embed_files(
        model, [root / images[i].relative for i in todo], batch_size, num_workers
    )
    fresh_rows = {todo[i]: row for row, i in enumerate(kept)}
    unreadable.update({todo[i]: reason for i, reason in failed})

    positions = [p for p in range(len(images)) if p in reused or p in fresh_rows]
    from_cache = [row for row, p in enumerate(positions) if p in reused]
    from_fresh = [row for row, p in enumerate(positions) if p in fresh_rows]
    sources = [(fresh, from_fresh, [fresh_rows[positions[row]] for row in from_fresh])]
    if cache is not None:
        cached_rows = [reused[positions[row]] for row in from_cache]
        sources.append((cache["embeddings"], from_cache, cached_rows))
    gallery = Gallery(
        root=root,
        paths=[images[p].relative for p in positions],
        embeddings=_gather(len(positions), fresh.shape[1], sources),
        cached=len(reused),
        embedded=len(fresh_rows),
        unreadable=[(images[p].relative, unreadable[p]) for p in sorted(unreadable)],
    )
    changed = cache is None or bool(todo) or len(reused) != len(old) or cached_bad != len(old_bad)
    return gallery, changed


def cache_content(
    gallery: Gallery, images: Sequence[ImageFile], fingerprint: str, image_size: int
) -> dict[str, Any]:
    """What the cache file holds: plain tensors, lists and strings (``weights_only`` loads it)."""
    stat = {image.relative: [image.size, image.mtime_ns] for image in images}
    bad_paths = [path for path, _ in gallery.unreadable]
    return {
        "format": CACHE_FORMAT,
        "checkpoint": fingerprint,
        "image_size": image_size,
        "paths": list(gallery.paths),
        "stats": torch.tensor([stat[p] for p in gallery.paths], dtype=torch.int64).reshape(-1, 2),
        "embeddings": gallery.embeddings.contiguous(),
        "unreadable": {
            "paths": bad_paths,
            "stats": torch.tensor([stat[p] for p in bad_paths], dtype=torch.int64).reshape(-1, 2),
            "reasons": [reason for _, reason in gallery.unreadable],
        },
    }


def save_cache(path: Path, content: dict[str, Any]) -> None:
    """Write the cache atomically: a temporary file in the same folder, then ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes it private; others may share it
        with os.fdopen(handle, "wb") as file:
            torch.save(content, file)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# Ranking ---------------------------------------------------------------------------------------


def top_k(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    k: int,
    exclude: Sequence[int | None] | None = None,
    block_elements: int = 1 << 24,
    device: torch.device | str | None = None,
) -> list[list[tuple[int, float]]]:
    """The ``k`` gallery rows most cosine-similar to each query: ``[(row, score), ...]`` per query.

    Exact (``torch.topk``); the score matrix is built ``block_elements // len(gallery)`` query
    rows at a time, so memory stays bounded. ``exclude[i]`` is a gallery row left out of query
    ``i``'s results (the query itself), or None.
    """
    device = torch.device(device) if device is not None else gallery.device
    gallery = F.normalize(gallery.to(device, torch.float32), dim=1)
    queries = F.normalize(queries.to(device, torch.float32), dim=1)
    count = min(k, gallery.shape[0])
    block = max(1, block_elements // max(1, gallery.shape[0]))
    results: list[list[tuple[int, float]]] = []
    for start in range(0, queries.shape[0], block):
        scores = queries[start : start + block] @ gallery.T
        if exclude is not None:
            for offset, row in enumerate(exclude[start : start + block]):
                if row is not None:
                    scores[offset, row] = float("-inf")
        values, indices = torch.topk(scores, count, dim=1)
        for row_values, row_indices in zip(values.tolist(), indices.tolist(), strict=True):
            results.append(
                [
                    (index, value)
                    for index, value in zip(row_indices, row_values, strict=True)
                    if value != float("-inf")
                ]
            )
    return results


# Output ----------------------------------------------------------------------------------------


def gallery_line(gallery: Gallery, seconds: float) -> str:
    """``gallery: 1,234 images (1,200 from cache, 34 embedded) in 3.2 s``."""
    parts = [f"{gallery.cached:,} from cache", f"{gallery.embedded:,} embedded"]
    if gallery.unreadable:
        parts.append(f"{len(gallery.unreadable):,} unreadable skipped")
    return f"gallery: {len(gallery.paths):,} images ({', '.join(parts)}) in {seconds:.1f} s"


def format_results(queries: Sequence[str], results: Sequence[Sequence[tuple[str, float]]]) -> str:
    """Each query's path, then its matches: rank, cosine score, path relative to the gallery."""
    lines = []
    for query, matches in zip(queries, results, strict=True):
        lines.append(f"query: {display_path(query)}")
        width = len(str(len(matches)))
        lines.extend(
            f"  {rank:>{width}}  {score:.4f}  {display_path(path)}"
            for rank, (path, score) in enumerate(matches, start=1)
        )
        if not matches:
            lines.append("  (no match)")
    return "\n".join(lines)


def results_json(
    args: argparse.Namespace,
    gallery: Gallery,
    queries: Sequence[str],
    results: Sequence[Sequence[tuple[str, float]]],
    unreadable_queries: Sequence[tuple[str, str]],
) -> dict[str, Any]:
    """The ``--json`` document."""
    return {
        "gallery": str(args.gallery),
        "checkpoint": str(args.ckpt),
        "top_k": args.top_k,
        "queries": [
            {
                "query": query,
                "matches": [
                    {"rank": rank, "path": path, "score": score}
                    for rank, (path, score) in enumerate(matches, start=1)
                ],
            }
            for query, matches in zip(queries, results, strict=True)
        ],
        "cached": gallery.cached,
        "embedded": gallery.embedded,
        "images": len(gallery.paths),
        "unreadable": [
            {"path": path, "reason": reason}
            for path, reason in [*gallery.unreadable, *unreadable_queries]
        ],
    }


def plot_matches(
    rows: Sequence[tuple[Image.Image, Sequence[tuple[Image.Image, str]]]],
    query_captions: Sequence[str] | None = None,
    cell_inches: float = 1.6,
) -> Figure:
    """A grid with one query per row: the query first, then its matches with their captions.

    Args:
        rows: ``(query image, [(match image, caption), ...])``; rows may have fewer matches.
        query_captions: optional text under each query image (e.g. its file name).
    """
    from lightning_siamese.viz import caption, to_display

    if not rows:
        raise ValueError("no query to plot")
    columns = 1 + max(len(matches) for _, matches in rows)
    # Fixed margins in inches (no constrained layout: it is slow with many axes): a title line
    # on top, two caption lines under every row.
    title, caption_space, gap = 0.25, 0.4, 0.1
    width = columns * cell_inches + (columns + 1) * gap
    height = title + len(rows) * (cell_inches + caption_space) + gap
    figure = Figure(figsize=(width, height))
    figure.subplots_adjust(
        left=gap / width,
        right=1 - gap / width,
        top=1 - title / height,
        bottom=caption_space / height,
        wspace=gap / cell_inches,
        hspace=caption_space / cell_inches,
    )
    axes = np.asarray(figure.subplots(len(rows), columns, squeeze=False))
    for row, (query, matches) in enumerate(rows):
        query_caption = query_captions[row] if query_captions is not None else ""
        cells = [(query, query_caption), *matches]
        for column in range(columns):
            axis = axes[row, column]
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title("query" if column == 0 else f"#{column}", fontsize=8)
            if column >= len(cells):
                axis.set_axis_off()
                continue
            image, text = cells[column]
            display = to_display(image)
            axis.imshow(display, cmap="gray" if display.ndim == 2 else None)
            axis.set_xlabel(caption(text), fontsize=7)
            if column == 0:
                for spine in axis.spines.values():
                    spine.set_edgecolor("tab:blue")
                    spine.set_linewidth(2)
    return figure


def _thumbnail(path: Path, size: int = 128) -> Image.Image:
    """A small copy of the image for the montage; a grey square when it cannot be read."""
    try:
        image = load_image(path)
    except Exception:
        return Image.new("RGB", (size, size), (128, 128, 128))
    image.thumbnail((size, size))
    return image


def _short(name: str, limit: int = 22) -> str:
    return name if len(name) <= limit else f"{name[: limit - 1]}…"


def write_montage(
    out: Path,
    query_files: Sequence[Path],
    gallery: Gallery,
    results: Sequence[Sequence[tuple[str, float]]],
) -> str:
    """Draw the first queries and their matches into ``out``; the line to print about it."""
    shown = min(len(query_files), MONTAGE_ROWS)
    rows = []
    for path, matches in zip(query_files[:shown], results[:shown], strict=True):
        cells = [
            (_thumbnail(gallery.root / match), f"{score:.4f}\n{_short(Path(match).name)}")
            for match, score in matches[:MONTAGE_MATCHES]
        ]
        rows.append((_thumbnail(path), cells))
    figure = plot_matches(rows, [_short(path.name) for path in query_files[:shown]])
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    notes = []
    if shown < len(query_files):
        notes.append(f"first {shown} of {len(query_files):,} queries shown")
    if any(len(matches) > MONTAGE_MATCHES for matches in results[:shown]):
        notes.append(f"top {MONTAGE_MATCHES} matches shown")
    return f"montage: {out}" + (f" ({'; '.join(notes)})" if notes else "")


# Command ---------------------------------------------------------------------------------------


def build_gallery(
    args: argparse.Namespace, model: SiameseModel, images: Sequence[ImageFile]
) -> Gallery:
    """The gallery's embeddings, through the cache unless ``--no-cache``."""
    fingerprint = checkpoint_fingerprint(args.ckpt)
    image_size = int(model.hparams["image_size"])
    path, cache = None, None
    if not args.no_cache:
        path, note = choose_cache_path(args.gallery, fingerprint, args.cache_dir)
        if note:
            print(note, file=sys.stderr)
        cache = load_cache(path, fingerprint, image_size)
    gallery, changed = update_gallery(
        model, args.gallery, images, cache, args.batch_size, args.num_workers
    )
    if path is not None and changed:
        try:
            save_cache(path, cache_content(gallery, images, fingerprint, image_size))
        except OSError as error:
            print(f"note: could not write the cache {path}: {error}", file=sys.stderr)
    return gallery


def embed_queries(
    args: argparse.Namespace, model: SiameseModel, paths: Sequence[Path], gallery: Gallery
) -> tuple[list[Path], torch.Tensor, list[int | None], list[tuple[str, str]]]:
    """The readable queries, their embeddings, their own gallery row (or None), unreadable ones.

    A query that is a gallery image reuses the gallery's embedding.
    """
    root = args.gallery.resolve()
    rows = {path: row for row, path in enumerate(gallery.paths)}
    own: list[int | None] = []
    for path in paths:
        try:
            relative = path.resolve().relative_to(root).as_posix()
        except ValueError:
            relative = None
        own.append(rows.get(relative) if relative is not None else None)
    todo = [i for i, row in enumerate(own) if row is None]
    fresh, kept, failed = embed_files(
        model, [paths[i] for i in todo], args.batch_size, args.num_workers
    )
    fresh_rows = {todo[i]: row for row, i in enumerate(kept)}
    keep = [i for i in range(len(paths)) if own[i] is not None or i in fresh_rows]
    in_gallery = [row for row, i in enumerate(keep) if own[i] is not None]
    embedded = [row for row, i in enumerate(keep) if own[i] is None]
    gallery_rows = {i: row for i, row in enumerate(own) if row is not None}
    embeddings = _gather(
        len(keep),
        gallery.embeddings.shape[1],
        [
            (gallery.embeddings, in_gallery, [gallery_rows[keep[row]] for row in in_gallery]),
            (fresh, embedded, [fresh_rows[keep[row]] for row in embedded]),
        ],
    )
    unreadable = [(str(paths[todo[i]]), reason) for i, reason in failed]
    return [paths[i] for i in keep], embeddings, [own[i] for i in keep], unreadable


def search(args: argparse.Namespace) -> int:
    images = gallery_images(args.gallery)
    query_files = query_paths(args.query)
    try:
        model = load_model(args.ckpt, args.device)
    except CheckpointError as error:
        raise SearchError(str(error)) from error
    log = sys.stderr if args.json else sys.stdout

    started = time.perf_counter()
    gallery = build_gallery(args, model, images)
    for path, reason in gallery.unreadable:
        print(f"warning: skipped unreadable image {args.gallery / path}: {reason}", file=sys.stderr)
    print(gallery_line(gallery, time.perf_counter() - started), file=log)
    if not gallery.paths:
        raise SearchError(f"gallery {args.gallery}: no readable image")

    queries, embeddings, own, bad_queries = embed_queries(args, model, query_files, gallery)
    for path, reason in bad_queries:
        print(f"warning: skipped unreadable query {path}: {reason}", file=sys.stderr)
    if not queries:
        raise SearchError(f"query {args.query}: no readable image")

    ranked = top_k(
        embeddings,
        gallery.embeddings,
        args.top_k,
        exclude=None if args.include_self else own,
        device=pick_device(args.device),
    )
    results = [[(gallery.paths[row], score) for row, score in matches] for matches in ranked]
    names = [str(path) for path in queries]
    if args.json:
        document = results_json(args, gallery, names, results, bad_queries)
        document["montage"] = str(args.out)
        print(json.dumps(document, indent=2))
    else:
        print(format_results(names, results))
    print(write_montage(args.out, queries, gallery, results), file=log)
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightning-siamese search",
        description="Find the gallery images most similar to query images (cosine similarity).",
    )
    parser.add_argument("--ckpt", type=Path, required=True, help="checkpoint written by `fit`")
    parser.add_argument(
        "--gallery", type=Path, required=True, help="folder searched (all images, recursively)"
    )
    parser.add_argument("--query", type=Path, required=True, help="an image file or a folder")
    parser.add_argument("--top-k", type=_positive, default=5, help="matches per query")
    parser.add_argument(
        "--out", type=Path, default=Path("search.png"), help="montage PNG (default: search.png)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--batch-size", type=_positive, default=64)
    parser.add_argument("--num-workers", type=_non_negative, default=2)
    parser.add_argument("--device", default=None, help="e.g. cpu, cuda:0 (default: auto)")
    parser.add_argument(
        "--include-self",
        action="store_true",
        help="keep a query that is a gallery image in its own results",
    )
    parser.add_argument("--no-cache", action="store_true", help="embed the whole gallery anew")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="folder for the gallery cache (default: GALLERY/.lightning-siamese, or "
        "$XDG_CACHE_HOME/lightning-siamese/search when the gallery is not writable)",
    )
    return parser


def main(args: Sequence[str] | None = None) -> int:
    parsed = build_parser().parse_args(None if args is None else list(args))
    try:
        return search(parsed)
    except SearchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
