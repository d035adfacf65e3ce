"""Which files a folder holds: the one rule of every command, and "one image or a folder"."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from lightning_siamese.errors import InputError
from lightning_siamese.files import display_path

#: File extensions read as images (lower case, with the dot).
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)


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


def image_inputs(path: str | Path, what: str, folder_only: bool = False) -> ImageListing:
    """One image file, or every image under a folder (:func:`list_images`): what a command is
    given as ``what`` (``gallery``, ``query``, ...). An :class:`InputError` names ``what`` when
    the path is missing, is a file where a folder is needed, or holds no image file."""
    path = Path(path)
    if path.is_file() and not folder_only:
        stat = path.stat()
        return ImageListing(path.parent, [ImageFile(path.name, stat.st_size, stat.st_mtime_ns)])
    if not path.is_dir():
        problem = (
            "does not exist"
            if not path.exists()
            else "is a file"
            if path.is_file()
            else "is neither a regular file nor a folder"
        )
        wanted = "a folder of images" if folder_only else "an image file or a folder of images"
        raise InputError(f"{what} {display_path(path)} {problem}: pass {wanted}")
    listing = list_images(path)
    if not listing.files:
        extensions = " ".join(sorted(IMAGE_EXTENSIONS))
        raise InputError(f"{what} {display_path(path)}: no image file in it ({extensions})")
    return listing
