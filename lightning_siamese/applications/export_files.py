"""Where an export is written: the file and its sidecar claimed before anything is loaded, the
new file moved into place only once exported and checked, the sidecar holding the file's
digest. A re-export replaces a file only while it is the one exported (nobody changed it), and
a kill at any moment leaves the old file and its sidecar, or a file without a sidecar, never a
sidecar that describes another file. Plain Python."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning_siamese.applications.export_format import FORMATS, sidecar_path
from lightning_siamese.files import atomic_write, content_digest
from lightning_siamese.outputs import claim_file


def written_here(out: Path) -> bool:
    """Whether ``out`` is a file that :func:`export_model` wrote and nobody changed since: its
    sidecar names it and holds its digest."""
    sidecar = json.loads(sidecar_path(out).read_text(encoding="utf-8"))
    return sidecar.get("file") == out.name and sidecar.get("digest") == content_digest(out)


def _sidecar_written_here(out: Path) -> Callable[[Path], bool]:
    def test(sidecar: Path) -> bool:
        content = json.loads(sidecar.read_text(encoding="utf-8"))
        return content.get("file") == out.name and content.get("format") in FORMATS

    return test


def claim_outputs(out: Path, force: bool = False) -> None:
    """``out`` and its sidecar, free to be written: missing, or an earlier export's (unchanged
    since), or ``force``.

    Raises:
        OutputExistsError: either is a file of somebody else's.
        OutputError: the folder cannot be written.
    """
    ours = _is_export(out)  # the file's digest, read once
    claim_file(out, "the exported file", force, lambda _: ours)
    claim_file(sidecar_path(out), "the sidecar", force, _sidecar_written_here(out))
    # ONNX keeps weights over 2 GiB in a file beside the graph: an earlier export's goes with it.
    claim_file(data_path(out), "the ONNX weights file", force, lambda _: ours)


def data_path(out: Path) -> Path:
    """Where ONNX keeps the weights of a large network: ``<out>.data``."""
    return out.with_name(f"{out.name}.data")


def _is_export(out: Path) -> bool:
    try:
        return out.is_file() and written_here(out)
    except (OSError, ValueError):  # no sidecar, or not JSON: not an export of this command
        return False


def move_into_place(staging: Path, out: Path, info: dict[str, Any]) -> Path:
    """Move the exported file (and ONNX's external weights) from ``staging`` to ``out`` and
    write its sidecar; the old sidecar goes first, so a kill at any moment leaves either the old
    file and its sidecar, or a file without a sidecar, never a sidecar describing another
    file. Returns the sidecar's path."""
    sidecar = sidecar_path(out)
    sidecar.unlink(missing_ok=True)
    data = staging / data_path(out).name
    if data.is_file():
        os.replace(data, data_path(out))
    os.replace(staging / out.name, out)
    with atomic_write(sidecar, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(info, indent=2) + "\n")
    return sidecar
