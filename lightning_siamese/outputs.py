"""Where commands write: never over a file of the user's, and one clear line when a place cannot
be written. Pure Python.

A command claims its output before any work is done (:func:`claim_file`, :func:`claim_folder`):

* a path that does not exist is free;
* a path holding what this package wrote there before is replaced, as a re-run expects; the
  caller's ``ours`` test says so (an export's sidecar that names the file and its digest, the
  ``Software`` field of a PNG, an evaluation's ``metrics.json``, a data set's marker file);
* anything else is refused with :class:`~lightning_siamese.errors.OutputExistsError`, which
  names what exists and the flag that replaces it (``--force``).

A folder that cannot be created or written is an :class:`~lightning_siamese.errors.OutputError`.
Files are then written whole (:func:`~lightning_siamese.files.atomic_write`); a folder of many
files is built beside its target and swapped in (:func:`replace_folder`).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from lightning_siamese.errors import OutputError, OutputExistsError
from lightning_siamese.files import PARTIAL_SUFFIX, display_path

#: What the package writes into the files it marks as its own (a PNG's ``Software`` field).
SOFTWARE = "lightning-siamese"
#: How many of a folder's entries an error names.
SHOWN = 3


def writable_folder(folder: str | Path, what: str, create: bool = False) -> Path:
    """``folder``, checked to be a folder that can be written into, or created (its nearest
    existing parent checked) where it is missing; created now only with ``create``, so that a
    command that fails later leaves no empty folder behind.

    Raises:
        OutputError: naming ``what``, when ``folder`` (or the parent it would be made in) is a
            file or cannot be written.
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(
            f"cannot write {what} in {display_path(folder)}: {display_path(existing)} is a "
            "file, not a folder; choose another path"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        verb = "write into" if existing == folder else f"create {display_path(folder)} in"
        raise OutputError(
            f"cannot {verb} {display_path(existing)} ({what}): permission denied; choose "
            "another path"
        )
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(
                f"cannot create the folder {display_path(folder)} for {what}: "
                f"{error.strerror or type(error).__name__}; choose another path"
            ) from error
    return folder


def claim_file(
    path: str | Path,
    what: str,
    force: bool = False,
    ours: Callable[[Path], bool] | None = None,
    option: str = "--out",
    how: str | None = None,
) -> Path:
    """``path``, free to be written as ``what``: missing, written by this package before
    (``ours``), or ``force``; its folder writable (or creatable). ``how`` says what to do
    when it is not (default: pass ``--force``, or choose another ``option``).

    Raises:
        OutputExistsError: ``path`` is a folder, or a file this package did not write.
        OutputError: its folder cannot be created or written.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputExistsError(
            f"{what} {display_path(path)} is a folder; {how or f'give {option} a file name'}"
        )
    if (path.exists() or path.is_symlink()) and not force and not _is_ours(path, ours):
        how = how or f"pass --force to replace it, or choose another {option}"
        raise OutputExistsError(
            f"{what} {display_path(path)} already exists and is not this command's earlier "
            f"output, unchanged; {how}"
        )
    writable_folder(path.parent, what)
    return path


def claim_folder(
    path: str | Path,
    what: str,
    force: bool = False,
    ours: Callable[[Path], bool] | None = None,
    option: str = "--out",
    forced: str = "files of the same names are replaced",
) -> Path:
    """``path``, a folder free to be written as ``what``: missing, empty, holding this
    package's earlier output (``ours``), or ``force`` (``forced`` says what that does);
    writable (or creatable).

    Raises:
        OutputExistsError: ``path`` is a file, or a folder holding files of somebody else's.
        OutputError: it cannot be created or written.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputExistsError(f"{what} {display_path(path)} is a file; give {option} a folder")
    if path.is_dir() and not force and not _is_ours(path, ours):
        entries = sorted(entry.name for entry in path.iterdir())
        if entries:
            listed = ", ".join(entries[:SHOWN]) + (
                f" and {len(entries) - SHOWN} more" if len(entries) > SHOWN else ""
            )
            raise OutputExistsError(
                f"{what} {display_path(path)} already holds files and is not this command's "
                f"earlier output, unchanged ({listed}); choose another {option}, or pass "
                f"--force ({forced})"
            )
    return writable_folder(path, what)


def _is_ours(path: Path, ours: Callable[[Path], bool] | None) -> bool:
    if ours is None:
        return False
    try:
        return ours(path)
    except Exception:  # a file the test cannot read is not one this package wrote
        return False


@contextlib.contextmanager
def replace_folder(path: str | Path) -> Iterator[Path]:
    """Build a folder's new content in a hidden folder beside ``path`` (yielded), then swap it
    in when the block ends: until then ``path`` is as it was, and after it holds the new
    content alone. On an error inside the block the new folder is removed.

    The swap is two renames (the old folder aside, the new one in) and the old folder's removal:
    for the moment between the renames nothing is at ``path``. What a kill leaves is a hidden
    ``.<name>.<hex>.partial`` folder (removed by the next build into ``path``) or, between the
    renames, ``.<name>.<hex>.old`` (put back at ``path`` by the next build, before it starts).

    Raises:
        OutputError: ``path`` is the current folder or one above it.
    """
    target = Path(path).absolute()
    if target == Path.cwd() or target in Path.cwd().parents:
        raise OutputError(
            f"{display_path(path)} is the current folder or holds it: give the folder to "
            "build a folder of its own (a new name)"
        )
    parent = writable_folder(target.parent, f"the folder {display_path(target)}", create=True)
    pattern = glob.escape(f".{target.name}.")
    old_ones = sorted(parent.glob(f"{pattern}*.old"), key=lambda p: p.stat().st_mtime_ns)
    if old_ones and not (target.exists() or target.is_symlink()):
        os.replace(old_ones.pop(), target)  # a swap cut short: the old folder comes back
    for stale in [*parent.glob(f"{pattern}*{PARTIAL_SUFFIX}"), *old_ones]:
        shutil.rmtree(stale, ignore_errors=True)
    token = uuid.uuid4().hex
    building = parent / f".{target.name}.{token}{PARTIAL_SUFFIX}"
    building.mkdir()
    try:
        yield building
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    old = parent / f".{target.name}.{token}.old"
    if target.is_symlink() or target.exists():
        os.replace(target, old)
    os.replace(building, target)
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)
