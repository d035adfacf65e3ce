"""Checkpoint files that are always whole: written next to their target, then renamed over it.

Lightning writes a local checkpoint into a temporary file of the system's temporary folder, then
moves it into place. When that folder is on another file system (a RAM disk, a node-local disk
under a shared checkpoint folder) the move is a copy into the final path, so a kill during the
copy leaves a truncated ``last.ckpt`` where the previous good one was. Here the temporary file
lies in the checkpoint's own folder, is flushed to disk, and replaces the target with one
``os.replace``: a kill at any moment leaves either the previous checkpoint or the new one.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

#: Suffix of a checkpoint being written; a file with it is what an interrupted save left.
PARTIAL_SUFFIX = ".partial"


def partial_files(folder: str | Path) -> list[Path]:
    """Files in ``folder`` that a save interrupted by a kill left behind."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(folder.glob(f".checkpoint-*{PARTIAL_SUFFIX}"))


def _sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose saves to local paths are atomic; URLs (``s3://`` ...) are
    saved by Lightning as before. Pass it as ``Trainer(plugins=[AtomicCheckpointIO()])``; the
    CLI uses it by default."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        # A URL (s3://, gs://, file://, fsspec chains with ::) goes to Lightning's writer.
        if storage_options is not None or "://" in str(path) or "::" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Hex digits only: never mistaken for "last*.ckpt" by --ckpt_path last.
        temporary = target.parent / f".checkpoint-{uuid.uuid4().hex}{PARTIAL_SUFFIX}"
        try:
            with temporary.open("wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        _sync_folder(target.parent)
