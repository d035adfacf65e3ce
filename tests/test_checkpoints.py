"""Checkpoint writes are atomic: an interrupted save leaves the previous checkpoint whole."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from conftest import tiny_args, tiny_model, write_pairs
from lightning_siamese.files import PARTIAL_SUFFIX
from lightning_siamese.training import checkpoints as checkpoint_io
from lightning_siamese.training.checkpoint_files import partial_files
from lightning_siamese.training.checkpoints import AtomicCheckpointIO


def checkpoint(epoch: int) -> dict[str, Any]:
    return {"epoch": epoch, "state_dict": {"weight": torch.full((1000,), float(epoch))}}


def test_an_interrupted_save_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "checkpoints" / "last.ckpt"
    saver = AtomicCheckpointIO()
    saver.save_checkpoint(checkpoint(0), target)

    real_save = torch.save

    def half_then_interrupt(obj: object, handle: Any) -> None:
        real_save(obj, handle)
        handle.truncate(handle.tell() // 2)
        assert len(partial_files(target.parent)) == 1  # written next to the target
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_io.torch, "save", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        saver.save_checkpoint(checkpoint(1), target)
    assert torch.load(target, weights_only=True)["epoch"] == 0
    assert not partial_files(target.parent)  # cleaned up when the process lives on

    monkeypatch.setattr(checkpoint_io.torch, "save", real_save)
    saver.save_checkpoint(checkpoint(1), target)
    assert torch.load(target, weights_only=True)["epoch"] == 1
    assert sorted(path.name for path in target.parent.iterdir()) == ["last.ckpt"]


def test_the_system_temporary_folder_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lightning's own writer moves a file from the temporary folder, which is a copy into the
    target when that folder is on another file system; ours renames within the folder."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("moved or copied a checkpoint")

    monkeypatch.setattr(shutil, "move", refuse)
    monkeypatch.setattr(shutil, "copyfile", refuse)
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint(checkpoint(3), target)
    assert torch.load(target, weights_only=True)["epoch"] == 3


def test_urls_are_saved_by_lightning(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    monkeypatch.setattr(
        TorchCheckpointIO,
        "save_checkpoint",
        lambda self, ckpt, path, options=None: seen.append(path),
    )
    AtomicCheckpointIO().save_checkpoint(checkpoint(0), "s3://bucket/run/last.ckpt")
    assert seen == ["s3://bucket/run/last.ckpt"]


def test_the_cli_trainer_writes_with_it(tmp_path: Path) -> None:
    from lightning_siamese.cli.lightning_cli import run

    write_pairs(tmp_path / "pairs", 20)
    cli = run(tiny_args(tmp_path / "pairs", tmp_path / "run"), run=False)
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)


@pytest.mark.parametrize(
    ("stage", "removed"), [("fit", True), ("validate", False), ("test", False)]
)
def test_partial_files_are_removed_when_a_fit_starts(
    tmp_path: Path, stage: str, removed: bool
) -> None:
    """Only a new fit clears them: `validate`/`test` may run next to a fit that is saving."""
    import pytorch_lightning as pl

    from lightning_siamese.training.checkpoints import BestAndLastCheckpoint

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    partial = folder / f".checkpoint-{'0' * 32}{PARTIAL_SUFFIX}"
    partial.write_bytes(b"half a checkpoint")
    callback = BestAndLastCheckpoint(dirpath=str(folder), save_last=True)
    trainer = pl.Trainer(default_root_dir=tmp_path, logger=False, callbacks=[callback])
    model = tiny_model()
    callback.setup(trainer, model, stage)
    assert partial.exists() is not removed
