"""Pair folders this package builds (``data emoji``, ``data glyphs``): the target claimed first,
the set built beside it and swapped in whole, and marked as built here. Pure Python.

A folder that holds other pairs (a user's own, or anything without the mark) is never written
into: the build refuses before it starts, unless told to replace the folder (``force``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lightning_siamese.files import CACHE_FOLDER, atomic_write, content_digest
from lightning_siamese.outputs import claim_folder, replace_folder

#: The hidden file that marks a pair folder as built by this package.
MARKER = ".lightning-siamese-data.json"


def built_here(folder: Path) -> bool:
    """Whether ``folder`` is a pair folder that :func:`building` made, as it was made: a file
    added or changed since (notes, an edited ``pairs.csv``, an image of the user's) makes it
    somebody else's."""
    path = folder / MARKER
    if not path.is_file():
        return False
    content = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(content, dict) or not str(content.get("written_by", "")).startswith(
        "lightning-siamese data "
    ):
        return False
    recorded = content.get("files", {})
    present = set(_files(folder)) - {MARKER}
    return (
        isinstance(recorded, dict)
        and set(recorded) == present
        and all(content_digest(folder / name) == digest for name, digest in recorded.items())
    )


def _files(folder: Path) -> list[str]:
    """Every file under ``folder``, relative, in POSIX form (not ``search``'s cache of its
    images: the package's own)."""
    files = (p.relative_to(folder) for p in folder.rglob("*") if not p.is_dir())
    return [p.as_posix() for p in files if CACHE_FOLDER not in p.parts]


@contextlib.contextmanager
def building(out: str | Path, builder: str, force: bool = False) -> Iterator[dict[str, Any]]:
    """Claim ``out`` for the ``builder`` (``emoji``, ``glyphs``) and yield a record whose
    ``folder`` is where to write; when the block ends the folder, marked, replaces ``out``.
    Put what the mark should say (``pairs``, settings) into the record.

    ``out`` may be missing, empty, or a set built here before and left as it was; ``force``
    replaces any other folder (everything in it is deleted).

    Raises:
        OutputExistsError: ``out`` holds files of somebody else's, without ``force``.
        OutputError: ``out`` cannot be created or written.
    """
    claim_folder(
        out,
        "the pair folder",
        force,
        built_here,
        forced="the folder is replaced: everything in it is deleted",
    )
    with replace_folder(out) as folder:
        record: dict[str, Any] = {"folder": folder}
        yield record
        mark: dict[str, Any] = {"written_by": f"lightning-siamese data {builder}"}
        mark.update({k: v for k, v in record.items() if k != "folder"})
        mark["files"] = {name: content_digest(folder / name) for name in sorted(_files(folder))}
        with atomic_write(folder / MARKER, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(mark, indent=2) + "\n")
