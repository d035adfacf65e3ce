"""Wrong settings fail at start with one clear line; a non-finite loss stops training with what
happened and what to do, keeping the last good checkpoint."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch

from conftest import tiny_args, tiny_model, write_pairs
from lightning_siamese.cli.main import main
from lightning_siamese.data.datamodule import SiameseDataModule
from lightning_siamese.errors import NonFiniteLossError
from lightning_siamese.models.embedding import EmbeddingNet
from lightning_siamese.training.checkpoints import AtomicCheckpointIO
from lightning_siamese.training.model import SiameseModel

BAD_SETTINGS = {
    "unknown backbone": (["--model.backbone=resnet9000"], "unknown backbone 'resnet9000'"),
    "image too small for the head": (
        ["--model.pool_size=4"],  # the tiny ResNet at 32 px ends in a 1x1 map
        "image_size=32 gives a 1x1 feature map at layer4.0, smaller than pool_size=4",
    ),
    "negative margin": (["--model.margin=-0.5"], "margin must be a finite number >= 0"),
    "fractions": (["--data.split_fractions=[0.5,0.2,0.2]"], "sum to 1"),
    "batch larger than a split": (["--data.batch_size=500"], "larger than the train split"),
    "missing split file": (["--data.split_file=/nowhere/split.csv"], "does not exist"),
    "split file that is a folder": (["--data.split_file=/"], "split file /: cannot read it"),
}


@pytest.mark.parametrize("name", sorted(BAD_SETTINGS))
def test_bad_settings_fail_with_one_line(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags, message = BAD_SETTINGS[name]
    root, run = tmp_path / "pairs", tmp_path / "run"
    write_pairs(root, 20)
    assert main(["fit", *tiny_args(root, run), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: ") and message in err[0], err
    assert "LIGHTNING_SIAMESE_TRACEBACK" in err[-1] and len(err) == 2
    assert not (run / "checkpoints").exists()


def test_missing_root_fails_before_the_model_is_built(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # ImageNet weights would be downloaded (and fail, offline) if the model came first.
    args = [*tiny_args(tmp_path / "nowhere", tmp_path / "run"), "--model.weights=imagenet"]
    assert main(["fit", *args]) == 2
    err = capsys.readouterr().err
    assert f"error: data root {tmp_path / 'nowhere'} does not exist" in err


def test_traceback_on_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIGHTNING_SIAMESE_TRACEBACK", "1")
    write_pairs(tmp_path / "pairs", 20)
    with pytest.raises(ValueError, match="margin must be a finite number >= 0"):
        main(["fit", *tiny_args(tmp_path / "pairs", tmp_path / "run"), "--model.margin=-1"])


def test_a_failed_weights_download_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Offline for certain: an empty torch.hub cache and a proxy on a closed local port.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    write_pairs(tmp_path / "pairs", 20)
    args = [*tiny_args(tmp_path / "pairs", tmp_path / "run"), "--model.weights=imagenet"]
    args.append("--model.backbone=resnet18")  # torchvision's download
    assert main(["fit", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: could not get the ImageNet weights of resnet18 from "), err
    line = err[0]
    assert "https://download.pytorch.org/models/resnet18-" in line
    assert "--model.weights FILE" in line and "--model.weights none" in line
    assert "$TORCH_HOME" in line and str(tmp_path / "torch-home" / "hub" / "checkpoints") in line


def test_a_bug_keeps_its_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only user errors become one line: a ValueError from inside the code is not one."""

    def broken(self: Any, features: torch.Tensor) -> torch.Tensor:
        raise ValueError("shape mismatch deep inside")

    monkeypatch.setattr(EmbeddingNet, "forward_tail", broken)
    write_pairs(tmp_path / "pairs", 20)
    with pytest.raises(ValueError, match="shape mismatch deep inside"):
        main(["fit", *tiny_args(tmp_path / "pairs", tmp_path / "run"), "--trainer.max_epochs=1"])


@pytest.mark.parametrize("stage", ["fit", "test"])
def test_a_bad_ckpt_path_is_named_before_the_model_is_built(
    stage: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_pairs(tmp_path / "pairs", 20)
    args = tiny_args(tmp_path / "pairs", tmp_path / "run")
    missing = tmp_path / "nowhere.ckpt"
    assert main([stage, *args, f"--ckpt_path={missing}"]) == 2
    assert f"error: {missing}: no such checkpoint file" in capsys.readouterr().err
    truncated = tmp_path / "cut.ckpt"
    truncated.write_bytes(b"PK\x03\x04 not the rest")
    assert main([stage, *args, f"--ckpt_path={truncated}"]) == 2
    assert f"error: {truncated}: not a readable checkpoint" in capsys.readouterr().err


def tiny_run(
    tmp_path: Path, root: Path, batch_size: int, **trainer_options: Any
) -> tuple[SiameseModel, SiameseDataModule, pl.Trainer]:
    """The tiny 32 px model (no download), its data module and a quiet Trainer, for in-process
    fits."""
    model = tiny_model()
    data = SiameseDataModule(str(root), image_size=32, batch_size=batch_size, num_workers=0)
    trainer = pl.Trainer(
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer_options,
    )
    return model, data, trainer


class PoisonAtEpoch(pl.Callback):
    """Turns a head weight into NaN when the given epoch starts."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            with torch.no_grad():
                next(pl_module.net.head.parameters()).fill_(float("nan"))


def test_non_finite_loss_stops_with_step_cause_and_good_checkpoint(tmp_path: Path) -> None:
    root = tmp_path / "pairs"
    write_pairs(root, 30)
    checkpoints = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    model, data, trainer = tiny_run(
        tmp_path, root, 8, max_epochs=3, callbacks=[checkpoints, PoisonAtEpoch(1)]
    )
    with pytest.raises(NonFiniteLossError) as error:
        trainer.fit(model, datamodule=data)
    message = str(error.value)
    assert "non-finite training loss (nan) at epoch 1, global step" in message
    assert "learning rate" in message and "--ckpt_path last" in message
    assert "last.ckpt" in message  # names the good checkpoint
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert state["epoch"] == 0
    assert all(torch.isfinite(value).all() for value in state["state_dict"].values())


class Opaque:
    """Stands for any pickled object a checkpoint may carry."""


def broken_checkpoints(good: Path, folder: Path) -> dict[str, tuple[Path, str]]:
    folder.mkdir(parents=True, exist_ok=True)
    truncated = folder / "truncated.ckpt"
    data = good.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    text = folder / "notes.ckpt"
    text.write_text("not a checkpoint")
    other = folder / "other.ckpt"
    torch.save(
        {
            "state_dict": {"layer.weight": torch.zeros(2, 2)},
            "hyper_parameters": {"hidden_units": 3},
            "pytorch-lightning_version": pl.__version__,
        },
        other,
    )
    pickled = folder / "pickled.ckpt"
    state = torch.load(good, weights_only=True)
    state["hyper_parameters"]["extra"] = Opaque()
    torch.save(state, pickled)
    return {
        "truncated": (truncated, "not a readable checkpoint: not a PyTorch file, or truncated"),
        "text file": (text, "not a readable checkpoint"),
        "another model": (other, "written by another model"),
        "pickled objects": (pickled, "holds Python objects beyond tensors"),
        "missing": (folder / "nothing.ckpt", "no such checkpoint file"),
    }


def test_bad_checkpoints_give_clear_errors(
    trained_run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lightning_siamese.errors import CheckpointError

    pairs, _, good = trained_run
    for name, (path, message) in broken_checkpoints(good, tmp_path / "bad").items():
        with pytest.raises(CheckpointError, match=message):
            SiameseModel.load_from_checkpoint(path)
        assert main(["evaluate", "--ckpt", str(path), "--root", str(pairs)]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith(f"error: {path}: ") and message in err, (name, err)
    assert SiameseModel.load_from_checkpoint(good).hparams.backbone == "timm/test_resnet"


def test_a_pickled_object_is_refused_where_torch_would_unpickle_it(
    trained_run: tuple[Path, Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """torch before 2.6 (the package allows 2.4) unpickles anything unless told otherwise: with
    that default put back, every load of the package still refuses a pickled object."""
    from lightning_siamese.errors import CheckpointError

    real = torch.load

    def old_default(*args: Any, weights_only: bool = False, **kwargs: Any) -> Any:
        if not weights_only:
            raise AssertionError("a load without weights_only=True")
        return real(*args, weights_only=weights_only, **kwargs)

    pairs, _, good = trained_run
    pickled, message = broken_checkpoints(good, tmp_path / "bad")["pickled objects"]
    monkeypatch.setattr(torch, "load", old_default)
    with pytest.raises(CheckpointError, match=message):
        SiameseModel.load_from_checkpoint(pickled)
    assert SiameseModel.load_from_checkpoint(good).hparams.backbone == "timm/test_resnet"
    for command in (
        ["evaluate", "--ckpt", str(pickled), "--root", str(pairs)],
        ["validate", *tiny_args(pairs, tmp_path / "run"), f"--ckpt_path={pickled}"],
    ):
        assert main(command) == 2, command
        assert message in capsys.readouterr().err, command
    # The CLI's checkpoint plugin (resume, validate, test) loads with weights_only too.
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        AtomicCheckpointIO().load_checkpoint(pickled)
    run = tmp_path / "resumed"
    args = [*tiny_args(pairs, run), "--trainer.max_epochs=2", "--validate_before_fit=false"]
    assert main(["fit", *args, f"--ckpt_path={good}"]) == 0
    assert main(["test", *args, f"--ckpt_path={good}"]) == 0


class SpoilFiles(pl.Callback):
    """When epoch 1 starts: delete one training image and truncate another."""

    def __init__(self) -> None:
        self.spoiled: list[Path] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch != 1:
            return
        pairs = trainer.datamodule.datasets["train"].pairs  # type: ignore[attr-defined]
        pairs[0].left.unlink()
        data = pairs[1].right.read_bytes()
        pairs[1].right.write_bytes(data[: len(data) // 3])
        self.spoiled = [pairs[0].left, pairs[1].right]


def test_files_going_bad_during_training_are_reported_and_skipped(tmp_path: Path) -> None:
    from lightning_siamese.data.triplets import UnreadableImageWarning

    root = tmp_path / "pairs"
    write_pairs(root, 30, size=48)
    spoil = SpoilFiles()
    model, data, trainer = tiny_run(
        tmp_path, root, 4, max_epochs=2, callbacks=[spoil], enable_checkpointing=False
    )
    with pytest.warns(UnreadableImageWarning) as caught:
        trainer.fit(model, datamodule=data)
    assert trainer.current_epoch == 2  # finished both epochs
    messages = {str(w.message) for w in caught if w.category is UnreadableImageWarning}
    for path in spoil.spoiled:
        assert any(str(path) in message for message in messages), (path, messages)
    assert all("became unreadable" in message for message in messages)
