"""Image files: reading any mode as upright RGB, the one rule for which files a folder holds,
thumbnails, and a dataset of image files."""

from __future__ import annotations

import errno
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from lightning_siamese.errors import InputError
from lightning_siamese.data.transforms import Transform

#: File extensions read as images (lower case, with the dot).
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)

#: Images with a side shorter than this are refused: placeholders and tracking pixels, not pictures.
MIN_IMAGE_SIDE = 8

_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


def display_path(path: str | Path) -> str:
    """``path`` as printable text: bytes of a name that are not UTF-8 (which Python keeps as
    surrogates) are shown escaped, ``\\xe9``, instead of failing to encode a whole report."""
    try:
        return os.fsencode(path).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that did not come from a file name
        return os.fspath(path).encode("utf-8", "backslashreplace").decode("utf-8")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert an image of any mode to 8-bit RGB.

    Transparent images (RGBA, LA, PA, palette with transparency) are composited on white, so
    transparent pixels do not turn black. 16-bit grayscale is scaled to 8 bits, not clipped.
    """
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in _SIXTEEN_BIT_MODES or image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        # "I" holds 16-bit PNGs in older Pillow; a float image is assumed to lie in 0..1.
        scale = 255.0 if image.mode == "F" else 255.0 / 65535.0
        array = np.clip(array * scale + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(array, mode="L").convert("RGB")
    if image.mode in {"RGBA", "LA", "PA", "RGBa", "La"}:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        background.alpha_composite(rgba)
        return background.convert("RGB")
    return image.convert("RGB")


def load_image(path: str | Path) -> Image.Image:
    """Read an image file as upright (EXIF orientation applied) RGB.

    Raises:
        OSError: the file is missing, not an image, truncated or corrupt.
        PIL.Image.DecompressionBombError: the image has more pixels than Pillow allows.
    """
    with Image.open(path) as image:
        image.load()
        upright = ImageOps.exif_transpose(image)
        return to_rgb(upright if upright is not None else image)


def verify_image(path: str | Path) -> tuple[int, int]:
    """Decode the whole file once, so truncated or corrupt data raises here, not mid-training;
    return its (width, height).

    JPEGs decode at reduced scale (every byte of the stream is still read), which is several
    times faster than a full decode.

    Raises:
        OSError: the file is missing, not an image, truncated or corrupt.
        PIL.Image.DecompressionBombError: the image has more pixels than Pillow's limit
            (``PIL.Image.MAX_IMAGE_PIXELS``), which Pillow itself only warns about below twice
            the limit.
    """
    with Image.open(path) as image:
        size = image.size
        # Pillow only warns between its limit and twice the limit; such an image would be
        # decoded, at full size, for every epoch. Refuse it here, before decoding.
        limit = Image.MAX_IMAGE_PIXELS
        if limit is not None and size[0] * size[1] > limit:
            raise Image.DecompressionBombError(
                f"Image size ({size[0] * size[1]} pixels) exceeds limit of {limit} pixels"
            )
        if image.format == "JPEG":
            image.draft("RGB", (image.width // 8 or 1, image.height // 8 or 1))
        image.load()
        return size


def check_image(path: Path, min_side: int = MIN_IMAGE_SIDE) -> str | None:
    """None if the file decodes as a usable image (both sides at least ``min_side`` pixels),
    else the reason and what to do."""
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes): re-download or remove it"
        width, height = verify_image(path)
    except Image.DecompressionBombError as error:
        limit = (Image.MAX_IMAGE_PIXELS or 0) / 1e6
        return (
            f"too large to decode safely ({error}); downscale it below {limit:.0f} megapixels "
            "or remove it"
        )
    except (OSError, SyntaxError, ValueError) as error:
        return f"unreadable or truncated image ({error}); re-download or remove it"
    if min(width, height) < min_side:
        return (
            f"too small ({width}x{height} pixels; both sides need at least {min_side}): "
            "probably a placeholder or tracking pixel; replace it with the real image or remove it"
        )
    return None


# Which files a folder holds: the one rule of every command ---------------------------------


class EntryKind(str, Enum):
    """What a folder entry is (see :func:`examine`)."""

    IMAGE = "image"
    FOLDER = "folder"
    HIDDEN = "hidden"
    OTHER = "other"
    UNUSABLE = "unusable"


def _link_problem(entry: Path) -> str | None:
    """Why a symbolic link cannot be used (None for a working link or a plain file)."""
    if not entry.is_symlink():
        return None
    try:
        entry.resolve(strict=True)
    except RuntimeError:  # Python < 3.13 reports a loop this way
        return "symbolic link loop: point it at an image or remove it"
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "symbolic link loop: point it at an image or remove it"
        target = display_path(os.readlink(entry))
        if error.errno == errno.ENOENT:
            return f"broken symbolic link (its target {target} does not exist): fix or remove it"
        return f"symbolic link to {target} cannot be followed ({error.strerror}): fix or remove it"
    return None


def examine(entry: Path) -> tuple[EntryKind, str | None]:
    """What a folder entry is, by the rule every command follows, and why it is unusable.

    In this order: a name starting with a dot is ``HIDDEN``; a broken symbolic link or a link
    loop is ``UNUSABLE``; a folder (or a link to one) is a ``FOLDER``; anything that is not a
    regular file (a FIFO, a device, a socket, or a link to one) is ``UNUSABLE`` and never opened
    (opening a FIFO blocks); a file without an image extension (:data:`IMAGE_EXTENSIONS`) is
    ``OTHER``; the rest is an ``IMAGE`` (links to files are followed, wherever they point).
    """
    if entry.name.startswith("."):
        return EntryKind.HIDDEN, None
    link = _link_problem(entry)
    if link is not None:
        return EntryKind.UNUSABLE, link
    if entry.is_dir():
        return EntryKind.FOLDER, None
    if not entry.is_file():
        return EntryKind.UNUSABLE, "not a regular file (a FIFO, device or socket): remove it"
    if entry.suffix.lower() not in IMAGE_EXTENSIONS:
        return EntryKind.OTHER, None
    return EntryKind.IMAGE, None


@dataclass(frozen=True)
class ImageFile:
    """An image file found under a folder: path relative to it (POSIX form), size, mtime."""

    relative: str
    size: int
    mtime_ns: int


@dataclass
class ImageListing:
    """The image files under a folder, sorted by path, and what was skipped."""

    root: Path
    files: list[ImageFile] = field(default_factory=list)
    #: (path, reason) of every entry that looks meant to be read but cannot be: broken links,
    #: link loops, special files, unreadable folders, links to folders (not followed).
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def paths(self) -> list[Path]:
        return [self.root / image.relative for image in self.files]


def list_images(root: str | Path, recursive: bool = True) -> ImageListing:
    """Every image file under ``root`` (by :func:`examine`), recursively unless told otherwise.

    Hidden files and folders and files of other kinds are left out silently; links to folders
    are not followed (no loops), and they and every unusable entry are listed in ``skipped``.
    """
    listing = ImageListing(Path(root))
    folders = [(listing.root, "")]
    while folders:
        folder, prefix = folders.pop()
        try:
            entries = sorted(folder.iterdir())
        except OSError as error:
            listing.skipped.append((display_path(folder), f"unreadable folder ({error})"))
            continue
        for entry in entries:
            kind, reason = examine(entry)
            if kind is EntryKind.FOLDER and recursive:
                if entry.is_symlink():
                    shown = display_path(entry)
                    listing.skipped.append((shown, "symbolic link to a folder, not followed"))
                else:
                    folders.append((entry, f"{prefix}{entry.name}/"))
            elif kind is EntryKind.UNUSABLE:
                listing.skipped.append((display_path(entry), str(reason)))
            elif kind is EntryKind.IMAGE:
                stat = entry.stat()
                listing.files.append(ImageFile(prefix + entry.name, stat.st_size, stat.st_mtime_ns))
    # By path components, as pathlib sorts: "a/x.png" before "a-b/x.png".
    listing.files.sort(key=lambda image: image.relative.split("/"))
    return listing


def thumbnail(path: str | Path, size: int = 96) -> Image.Image:
    """A copy of the image at most ``size`` pixels a side, for pictures; a grey square when the
    file cannot be read (a picture with a gap beats no picture)."""
    try:
        image = load_image(path)
    except Exception:  # any decoding failure; the picture is only an illustration
        return Image.new("RGB", (size, size), (128, 128, 128))
    image.thumbnail((size, size))
    return image


class ImageFilesDataset(Dataset):
    """Images from a list of files, preprocessed; items ``image``, ``index`` and ``path``
    (relative to ``root`` when given, as a string).

    With ``skip_unreadable``, a file that fails to read gives a blank image and its reason in
    the item's ``unreadable`` (empty for a good file) instead of an error, so one file that went
    bad does not end a run over thousands; ``skipped`` may list files left out beforehand.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        transform: Transform,
        root: str | Path | None = None,
        skip_unreadable: bool = False,
        skipped: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.paths = [Path(path) for path in paths]
        self.transform = transform
        self.root = Path(root) if root is not None else None
        self.skip_unreadable = skip_unreadable
        #: (path, reason) of the files left out before the dataset was built.
        self.skipped = list(skipped)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        item: dict[str, Any] = {"index": index, "path": self.shown(path)}
        if not self.skip_unreadable:
            return {"image": self.transform(load_image(path)), **item}
        try:
            return {"image": self.transform(load_image(path)), **item, "unreadable": ""}
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            blank = self.transform(Image.new("RGB", (MIN_IMAGE_SIDE, MIN_IMAGE_SIDE)))
            reason = f"unreadable or truncated image ({error}); re-download or remove it"
            return {"image": blank, **item, "unreadable": reason}

    def shown(self, path: Path) -> str:
        """``path`` as items name it: relative to ``root`` when there is one."""
        return str(path.relative_to(self.root) if self.root is not None else path)


def checked_image_folder(
    root: str | Path, transform: Transform, workers: int = 8
) -> ImageFilesDataset:
    """Every readable image file under ``root`` by the rule of
    :func:`~lightning_siamese.data.images.list_images` (recursively, hidden files left out), in sorted
    order; items carry ``path`` relative to it. Each file is decoded once first: the unreadable
    ones and the entries that are not read at all (special files, broken links) are named with
    their reason, left out, and listed in the dataset's ``skipped`` (``predict`` warns of
    each); a file that goes bad later is skipped as it is met."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder: pass --data.predict_root a folder of images")
    listing = list_images(root)
    paths = listing.paths()
    with warnings.catch_warnings(), ThreadPoolExecutor(max(1, workers)) as pool:
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # named below instead
        reasons = list(pool.map(partial(check_image, min_side=1), paths))
    prefix = display_path(root).rstrip("/") + "/"
    skipped = [(path.removeprefix(prefix), reason) for path, reason in listing.skipped]
    skipped += [
        (display_path(path.relative_to(root)), reason)
        for path, reason in zip(paths, reasons, strict=True)
        if reason
    ]
    good = [path for path, reason in zip(paths, reasons, strict=True) if not reason]
    if not good:
        raise InputError(f"no readable image file under {root}")
    return ImageFilesDataset(good, transform, root, skip_unreadable=True, skipped=skipped)
