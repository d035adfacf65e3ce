"""The gallery behind ``search``: the images of a folder, their embeddings, and the cache.

The gallery's embeddings are cached next to it, in ``GALLERY/.lightning-siamese/``, one file per
model, named by :func:`model_fingerprint` (a digest of its weights and settings, not of the
checkpoint file's path or date: a model retrained in place gets a cache of its own, a copied
checkpoint shares one). The cache holds each embedding with the content digest of the file it
came from (:func:`~lightning_siamese.files.content_digest`): a later search reads every file's
bytes and embeds only content it has not seen, whatever the file's size or mtime say. Files that
could not be read are not cached: they are tried again at every search.
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
from lightning_siamese.data.images import unreadable_reason
from lightning_siamese.files import CACHE_FOLDER, atomic_write, content_digest, user_cache_dir
from lightning_siamese.training.model import SiameseModel

#: Version of the cache file's layout; a file of another version is rebuilt.
CACHE_FORMAT = 2


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
    #: Content digest of each image in ``paths`` (:func:`~lightning_siamese.files.content_digest`).
    digests: dict[str, str] = field(default_factory=dict)


# Cache -----------------------------------------------------------------------------------------


def model_fingerprint(model: torch.nn.Module) -> str:
    """A digest of what decides the model's embeddings: every tensor of its state dict (name,
    dtype, shape and bytes, in order) and its hyper-parameters (but for its
    ``RUNTIME_SETTINGS``, which change how it computes, not what).

    Hyper-parameters that are plain data (numbers, strings, lists and dicts of them) count by
    value; any other (the optimizer and scheduler factories) by its type alone, since its repr
    holds a memory address that differs at every load.
    """
    digest = hashlib.blake2b(digest_size=16)
    for name, value in model.state_dict().items():
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous()
            digest.update(f"{name}\n{tensor.dtype}\n{tuple(tensor.shape)}\n".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:  # an extra state a module chose to save
            digest.update(f"{name}\n{_plain(value)!r}\n".encode())
    hparams = dict(getattr(model, "hparams", {}))
    runtime = getattr(model, "RUNTIME_SETTINGS", ())  # how it computes, not what
    settings = sorted((str(k), _plain(v)) for k, v in hparams.items() if k not in runtime)
    digest.update(repr(settings).encode())
    return digest.hexdigest()


def _plain(value: Any) -> Any:
    """``value`` if it is plain data, recursively (dicts as sorted item lists), else the
    qualified name of its type."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return type(value)(_plain(item) for item in value)
    if isinstance(value, dict):
        return sorted((repr(key), _plain(item)) for key, item in value.items())
    kind = type(value)
    return f"<{kind.__module__}.{kind.__qualname__}>"


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
    path: Path, fingerprint: str, image_size: int, notes: list[str], dim: int | None = None
) -> dict[str, Any] | None:
    """The cache file's content, or None when it is missing, unreadable (said in ``notes``), of
    another format (it is then rebuilt) or for another model."""
    if not path.is_file():
        return None
    try:
        cache = torch.load(path, map_location="cpu", weights_only=True)
        if cache["format"] != CACHE_FORMAT:
            return None
        paths, digests, embeddings = cache["paths"], cache["digests"], cache["embeddings"]
        valid = (
            cache["model"] == fingerprint
            and cache["image_size"] == image_size
            and len(paths) == len(digests) == len(embeddings)
        )
        width = embeddings.shape[1] if embeddings.ndim == 2 else None
        if valid and (width != (dim or width) or not bool(torch.isfinite(embeddings).all())):
            raise ValueError("its embeddings are not finite rows of the model's size")
    except Exception as error:
        notes.append(f"note: ignoring unreadable cache {path} ({type(error).__name__})")
        return None
    return cache if valid else None


def file_digests(root: Path, images: Sequence[ImageFile]) -> tuple[dict[int, str], dict[int, str]]:
    """The content digest of each image (by position), and the reason for each one whose bytes
    cannot be read (a permission, a file gone since it was listed)."""
    digests: dict[int, str] = {}
    unreadable: dict[int, str] = {}
    for position, image in enumerate(images):
        path = root / image.relative
        try:
            digests[position] = content_digest(path)
        except OSError as error:
            unreadable[position] = unreadable_reason(error, path)
    return digests, unreadable


def update_gallery(
    model: SiameseModel,
    root: Path,
    images: Sequence[ImageFile],
    cache: dict[str, Any] | None,
    batch_size: int = 64,
    num_workers: int = 0,
) -> tuple[Gallery, bool]:
    """The gallery's embeddings: files whose content digest the cache holds (under any path)
    reuse its embedding, the others are embedded now. Unreadable files are left out and not
    remembered, so the next search tries them again.

    Returns:
        the gallery and whether it differs from ``cache`` (so the cache needs rewriting).
    """
    digests, unreadable = file_digests(root, images)
    known: dict[str, int] = {}  # content digest -> cache row
    if cache is not None:
        known = {digest: row for row, digest in enumerate(cache["digests"])}

    reused: dict[int, int] = {}  # position in images -> cache row
    todo: list[int] = []
    for position, digest in digests.items():
        if digest in known:
            reused[position] = known[digest]
        else:
            todo.append(position)

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
    paths = [images[p].relative for p in positions]
    gallery = Gallery(
        root=root,
        paths=paths,
        embeddings=gather_rows(len(positions), fresh.shape[1], sources),
        cached=len(reused),
        embedded=len(fresh_rows),
        unreadable=[(images[p].relative, unreadable[p]) for p in sorted(unreadable)],
        digests={images[p].relative: digests[p] for p in positions},
    )
    changed = cache is None or (
        (cache["paths"], cache["digests"]) != (paths, [digests[p] for p in positions])
    )
    return gallery, changed


def cache_content(gallery: Gallery, fingerprint: str, image_size: int) -> dict[str, Any]:
    """What the cache file holds: plain tensors, lists and strings (``weights_only`` loads it):
    each row's path, the content digest it was embedded from, and its embedding."""
    return {
        "format": CACHE_FORMAT,
        "model": fingerprint,
        "image_size": image_size,
        "paths": list(gallery.paths),
        "digests": [gallery.digests[path] for path in gallery.paths],
        "embeddings": gallery.embeddings.contiguous(),
    }


def save_cache(path: Path, content: dict[str, Any]) -> None:
    """Write the cache atomically (:func:`~lightning_siamese.files.atomic_write`)."""
    with atomic_write(path) as handle:
        torch.save(content, handle)


# The whole -------------------------------------------------------------------------------------


def build_gallery(
    model: SiameseModel,
    root: str | Path,
    use_cache: bool = True,
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    listing: ImageListing | None = None,
) -> Gallery:
    """Every readable image under ``root`` with its embedding by ``model``, through the cache
    (unless ``use_cache`` is off) of that model (:func:`model_fingerprint`).

    ``listing`` is the listing of ``root`` when the caller has it already.

    Raises:
        InputError: ``root`` is missing, or holds no image file.
    """
    started = time.perf_counter()
    root = Path(root)
    listing = listing or image_inputs(root, "gallery", folder_only=True)
    image_size = int(model.hparams["image_size"])
    notes: list[str] = []
    path, cache, fingerprint = None, None, ""
    if use_cache:
        fingerprint = model_fingerprint(model)
        path, note = choose_cache_path(root, fingerprint, Path(cache_dir) if cache_dir else None)
        notes += [note] if note else []
        dim = int(model.hparams["embedding_dim"])
        cache = load_cache(path, fingerprint, image_size, notes, dim)
    gallery, changed = update_gallery(model, root, listing.files, cache, batch_size, num_workers)
    if path is not None and changed:
        try:
            save_cache(path, cache_content(gallery, fingerprint, image_size))
        except OSError as error:
            notes.append(f"note: could not write the cache {path}: {error}")
    gallery.skipped, gallery.notes, gallery.cache_file = listing.skipped, notes, path
    gallery.seconds = time.perf_counter() - started
    return gallery
