"""Files that are always whole, the user's cache folder, and paths as printable text. Pure
Python.

A file is written to a temporary name in its own folder, flushed to disk, and renamed over the
target with one ``os.replace``: a kill at any moment leaves either the previous file or the new
one, never half of one (checkpoints, the gallery's embedding cache, ``split.csv``, every file
the package writes). The temporary file is locked while it is written, so that the next write
removes what a killed one left and nothing else.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import shutil
import sys
import unicodedata
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

#: The hidden folder this package keeps beside a user's images (``search``'s gallery cache):
#: never one of the user's files, never a problem of a pair folder.
CACHE_FOLDER = ".lightning-siamese"
#: Suffix of a file being written; a file with it is what an interrupted write left.
PARTIAL_SUFFIX = ".partial"
#: The file held inside a folder being written (:func:`remove_stale_partials`).
LOCK_FILE = ".lock"


def _sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


@contextlib.contextmanager
def atomic_write(
    path: str | Path, mode: str = "wb", prefix: str | None = None, **options: Any
) -> Iterator[IO[Any]]:
    """Open ``<prefix><hex>.partial`` next to ``path`` for writing (``mode`` ``wb`` or ``w``,
    ``options`` as for :func:`open`), then make it ``path`` once the block ends.

    The default ``prefix`` is ``.<name>.`` (a hidden file). Permissions follow the umask, as
    for any new file. On an error inside the block the temporary file is removed and ``path``
    is left as it was; what a killed write left is removed by the next write of ``path``
    (:func:`remove_stale_partials`).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = prefix or f".{target.name}."
    remove_stale_partials(target.parent, prefix)
    temporary = target.parent / f"{prefix}{uuid.uuid4().hex}{PARTIAL_SUFFIX}"
    try:
        with open(temporary, mode.replace("w", "x"), **options) as handle:
            hold(handle)
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _sync_folder(target.parent)


def hold(handle: IO[Any]) -> None:
    """Lock the open file (an exclusive advisory lock, released when the process ends, killed
    or not), so that :func:`remove_stale_partials` leaves a write in progress alone. A no-op
    where locks are not available."""
    if fcntl is not None:
        with contextlib.suppress(OSError):
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def remove_stale_partials(folder: Path, prefix: str) -> list[Path]:
    """Remove the files ``<prefix>*.partial`` of ``folder`` that no process holds
    (:func:`hold`): what writes cut short by a kill left. A folder of that name is removed when
    the ``.lock`` file inside it is not held. Returns what was removed (nothing where locks are
    not available)."""
    removed: list[Path] = []
    if fcntl is None or not folder.is_dir():
        return removed
    for candidate in folder.glob(f"{glob.escape(prefix)}*{PARTIAL_SUFFIX}"):
        lock = candidate / LOCK_FILE if candidate.is_dir() else candidate
        try:
            with open(lock, "rb") as handle:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                if candidate.is_dir():
                    shutil.rmtree(candidate, ignore_errors=True)
                else:
                    candidate.unlink(missing_ok=True)
        except OSError:  # held by a write in progress, or gone meanwhile
            continue
        removed.append(candidate)
    return removed


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/lightning-siamese`` (``~/.cache/lightning-siamese`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lightning-siamese"


def display_path(path: str | Path) -> str:
    """``path`` as printable text: bytes of a name that are not UTF-8 (which Python keeps as
    surrogates) are shown escaped, ``\\xe9``, instead of failing to encode a whole report."""
    try:
        return os.fsencode(path).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that did not come from a file name
        return os.fspath(path).encode("utf-8", "backslashreplace").decode("utf-8")


def name_key(name: str) -> str:
    """The form in which names are compared: Unicode NFC, so ``café`` typed on one system and
    the decomposed ``café`` that macOS writes are one name."""
    return unicodedata.normalize("NFC", name)


def content_digest(path: str | Path) -> str:
    """A fingerprint of the file's bytes: BLAKE2b, 16 bytes, as 32 hex digits. Equal digests
    mean equal content whatever the file's name, size or mtime says.

    Raises:
        OSError: the file cannot be opened or read.
    """
    with open(path, "rb") as handle:
        if sys.version_info >= (3, 11):
            return hashlib.file_digest(handle, _blake2b_16).hexdigest()
        digest = _blake2b_16()  # Python 3.10: the loop file_digest runs
        while chunk := handle.read(1 << 18):
            digest.update(chunk)
        return digest.hexdigest()


def _blake2b_16() -> hashlib.blake2b:
    return hashlib.blake2b(digest_size=16)
