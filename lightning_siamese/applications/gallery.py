"""The gallery behind ``search``: the images of a folder, their embeddings, and the cache.

The gallery's embeddings are cached next to it, in ``GALLERY/.lightning-siamese/``, one file per
checkpoint: a later search embeds only new or changed files.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lightning_siamese.applications.inference import embed_files, gather_rows
from lightning_siamese.data.folders import ImageFile, ImageListing, image_inputs
from lightning_siamese.files import atomic_write, user_cache_dir
from lightning_siamese.training.model import SiameseModel

#: Hidden folder inside the gallery that holds the embedding caches.
CACHE_FOLDER = ".lightning-siamese"
#: Version of the cache file's layout; a file of another version is rebuilt.
CACHE_FORMAT = 1


@dataclass
class Gallery:
    """The gallery's usable images and their embeddings, with what the cache contributed."""

    root: Path
    paths: list[str]
    embeddings: torch.Tensor
    cached: int = 0
    embedded: int = 0
    #: (relative path, reason) of every image file that could not be read.
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    #: (path, reason) of folder entries that are not read at all (broken links, special files).
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: Where the cache was read or written, when that is worth saying.
    notes: list[str] = field(default_factory=list)
    #: Seconds spent listing, reading the cache and embedding.
    seconds: float = 0.0
    #: The embedding cache file (None without the cache); an approximate index lives beside it.
    cache_file: Path | None = None
    #: (size, mtime_ns) of each image in ``paths``, as listed.
    stats: dict[str, tuple[int, int]] = field(default_factory=dict)


# Cache -----------------------------------------------------------------------------------------


def checkpoint_fingerprint(checkpoint: Path) -> str:
    """A short hash of the checkpoint's resolved path, size and mtime (not of its content)."""
    resolved = checkpoint.resolve()
    stat = resolved.stat()
    text = f"{resolved}\n{stat.st_size}\n{stat.st_mtime_ns}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def gallery_writable(gallery: Path) -> bool:
    """Whether the cache folder inside the gallery exists or can be made, and is writable."""
    folder = gallery / CACHE_FOLDER
    try:
        folder.mkdir(exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/lightning-siamese/search`` (``~/.cache/...`` when unset)."""
    return user_cache_dir() / "search"


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
    if gallery_writable(gallery):
        return cache_path(gallery, fingerprint), None
    fallback = cache_path(gallery, fingerprint, default_cache_dir())
    return fallback, f"note: gallery {gallery} is not writable; caching embeddings in {fallback}"


def load_cache(
    path: Path, fingerprint: str, image_size: int, notes: list[str]
) -> dict[str, Any] | None:
    """The cache file's content, or None when it is missing, unreadable (said in ``notes``) or
    for another model."""
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
        notes.append(f"note: ignoring unreadable cache {path} ({type(error).__name__})")
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

    result = embed_files(model, [root / images[i].relative for i in todo], batch_size, num_workers)
    fresh, kept, failed = result.outputs, result.indices, result.unreadable
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
        embeddings=gather_rows(len(positions), fresh.shape[1], sources),
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
    """Write the cache atomically (:func:`~lightning_siamese.files.atomic_write`)."""
    with atomic_write(path) as handle:
        torch.save(content, handle)


# The whole -------------------------------------------------------------------------------------


def build_gallery(
    model: SiameseModel,
    root: str | Path,
    checkpoint: str | Path,
    use_cache: bool = True,
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    listing: ImageListing | None = None,
) -> Gallery:
    """Every readable image under ``root`` with its embedding by ``model``, through the cache
    (unless ``use_cache`` is off) of the checkpoint file it was loaded from.

    ``listing`` is the listing of ``root`` when the caller has it already.

    Raises:
        InputError: ``root`` is missing, or holds no image file.
    """
    started = time.perf_counter()
    root, checkpoint = Path(root), Path(checkpoint)
    listing = listing or image_inputs(root, "gallery", folder_only=True)
    fingerprint = checkpoint_fingerprint(checkpoint)
    image_size = int(model.hparams["image_size"])
    notes: list[str] = []
    path, cache = None, None
    if use_cache:
        path, note = choose_cache_path(root, fingerprint, Path(cache_dir) if cache_dir else None)
        notes += [note] if note else []
        cache = load_cache(path, fingerprint, image_size, notes)
    gallery, changed = update_gallery(model, root, listing.files, cache, batch_size, num_workers)
    if path is not None and changed:
        try:
            save_cache(path, cache_content(gallery, listing.files, fingerprint, image_size))
        except OSError as error:
            notes.append(f"note: could not write the cache {path}: {error}")
    gallery.skipped, gallery.notes, gallery.cache_file = listing.skipped, notes, path
    listed = {image.relative: (image.size, image.mtime_ns) for image in listing.files}
    gallery.stats = {relative: listed[relative] for relative in gallery.paths}
    gallery.seconds = time.perf_counter() - started
    return gallery
