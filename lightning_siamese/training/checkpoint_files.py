"""Checkpoint files of ``fit``: what is wrong with one, before a model is built from it, and the
partial files an interrupted save leaves. Pure torch (``wise-ft`` and the CLI's early checks
read a checkpoint without Lightning)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch

from lightning_siamese.errors import CheckpointError
from lightning_siamese.files import PARTIAL_SUFFIX
from lightning_siamese.models.weights_file import nonfinite_tensors

#: A checkpoint being written is ``<PARTIAL_PREFIX><hex><PARTIAL_SUFFIX>``: what a save
#: interrupted by a kill leaves.
PARTIAL_PREFIX = ".checkpoint-"


def partial_files(folder: str | Path) -> list[Path]:
    """Files in ``folder`` that a save interrupted by a kill left behind."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(folder.glob(f"{PARTIAL_PREFIX}*{PARTIAL_SUFFIX}"))


def check_checkpoint(path: str | Path, weights_only: bool = True) -> None:
    """Raise :class:`CheckpointError`, naming the problem, unless ``path`` is a readable
    checkpoint of a ``SiameseModel``: missing, not a PyTorch file, truncated, holding pickled
    objects (with ``weights_only``), or written by another model.

    Cheap: the file is memory-mapped and its tensors are not read, so a bad file is named as
    such before any model is built from it.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder: pass a checkpoint file (.ckpt) in it")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        # Memory-mapped where the file is a zip archive (torch.save's format since 1.6).
        mmap = zipfile.is_zipfile(path)
        content = torch.load(path, map_location="cpu", weights_only=weights_only, mmap=mmap)
    except Exception as error:  # torch.load raises many kinds for a file that is not whole
        raise CheckpointError(checkpoint_problem(path, error)) from error
    hparams = content.get("hyper_parameters") if isinstance(content, dict) else None
    if not isinstance(content, dict) or "state_dict" not in content or hparams is None:
        raise CheckpointError(
            f"{path}: a PyTorch file but not a Lightning checkpoint of a SiameseModel (no "
            "state_dict/hyper_parameters); pass a .ckpt written by `lightning-siamese fit`"
        )
    if "backbone" not in hparams:
        raise CheckpointError(
            f"{path}: written by another model: its hyper-parameters "
            f"{sorted(hparams)[:8]} are not a SiameseModel's"
        )


def checkpoint_problem(path: Path, error: BaseException) -> str:
    """What is wrong with a checkpoint file, from the error loading it raised."""
    text = f"{type(error).__name__}: {error}".split("\n")[0][:300]
    if path.is_file() and not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        return (
            f"{path}: not a readable checkpoint: not a PyTorch file, or truncated "
            f"({path.stat().st_size:,} bytes); pass a complete .ckpt written by "
            "`lightning-siamese fit`"
        )
    if "Weights only load failed" in str(error):
        return (
            f"{path}: holds Python objects beyond tensors and plain values, which are not loaded "
            "by default (weights_only=True): a checkpoint can run code when unpickled. Only if "
            "you trust its source, pass weights_only=False"
        )
    if isinstance(error, KeyError) or "hyper_parameters" in text:
        return (
            f"{path}: a PyTorch file but not a Lightning checkpoint of a SiameseModel "
            f"({text}); pass a .ckpt written by `lightning-siamese fit`"
        )
    if isinstance(error, TypeError) or "state_dict" in text or "size mismatch" in text:
        return (
            f"{path}: written by another model: its settings or weights do not fit a "
            f"SiameseModel ({text})"
        )
    size = path.stat().st_size if path.is_file() else 0
    return (
        f"{path}: not a readable checkpoint: not a PyTorch file, or truncated ({size:,} bytes; "
        f"{text}); pass a complete .ckpt written by `lightning-siamese fit`"
    )


def check_finite(path: str | Path, state: dict[str, torch.Tensor], shown: int = 3) -> None:
    """A :class:`CheckpointError` naming the tensors of ``state`` (a checkpoint's state dict)
    that hold NaN or infinite values: such a model embeds everything as NaN."""
    bad = nonfinite_tensors(state)
    if bad:
        listed = ", ".join(bad[:shown]) + (
            f" and {len(bad) - shown} more" if len(bad) > shown else ""
        )
        raise CheckpointError(
            f"{path}: {len(bad)} weight tensor(s) hold NaN or infinite values ({listed}): the "
            "training diverged before this file was written. Use an earlier checkpoint of the "
            "run, or fit again with a lower learning rate"
        )
