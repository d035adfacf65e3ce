"""The gallery behind ``search``: the images of a folder, their embeddings, and the cache.

The gallery's embeddings are cached next to it, in ``GALLERY/.lightning-siamese/``, one file per
checkpoint: a later search embeds only new or changed files.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lightning_siamese.errors import InputError
from lightning_siamese.images import IMAGE_EXTENSIONS, load_image
from lightning_siamese.inference import embed_paths
from lightning_siamese.pairs import display_path

if TYPE_CHECKING:
    from lightning_siamese.model import SiameseModel

#: Hidden folder inside the gallery that holds the embedding caches.
CACHE_FOLDER = ".lightning-siamese"
#: Version of the cache file's layout; a file of another version is rebuilt.
CACHE_FORMAT = 1


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
    """The gallery's images; :class:`InputError` when the folder is missing or has none."""
    if not gallery.is_dir():
        raise InputError(f"gallery {gallery}: no such folder")
    images = list_images(gallery)
    if not images:
        extensions = " ".join(sorted(IMAGE_EXTENSIONS))
        raise InputError(f"gallery {gallery}: no image file in it ({extensions})")
    return images


def query_paths(query: Path) -> list[Path]:
    """One image file, or every image under a folder; :class:`InputError` when there is none."""
    if query.is_file():
        return [query]
    if not query.is_dir():
        raise InputError(f"query {query}: no such file or folder")
    paths = [query / image.relative for image in list_images(query)]
    if not paths:
        raise InputError(f"query {query}: no image file in the folder")
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
