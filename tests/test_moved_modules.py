"""What lightning-siamese 0.1 saved still works: its module paths import (with a warning that
names the new path), its config.yaml runs, its checkpoints' settings load."""

from __future__ import annotations

import importlib
import shutil
import sys
from pathlib import Path

import pytest
import torch

from conftest import TESTS_DIR, write_pairs
from lightning_siamese.cli.main import main
from lightning_siamese.moved_modules import MOVED, MovedModuleWarning

OLD_CONFIG = TESTS_DIR / "configs" / "config-0.1.yaml"


def test_every_old_module_path_finds_its_names() -> None:
    # The modules of 0.1 and a name each of them defined, written out as 0.1 had them.
    names = {
        "images": "load_image", "pairs": "discover_pairs", "splits": "assign_splits",
        "transforms": "eval_transform", "triplets": "TripletSampler", "emoji": "build_emoji",
        "glyphs": "build_glyphs", "backbones": "lite_wheel", "embedding": "GridPool",
        "losses": "paired_distance", "wise_ft": "mix_checkpoint", "frozen_graph": "FrozenGraph",
        "ann_index": "IndexSettings", "metrics": "SplitMetrics", "report": "SplitEmbeddings",
        "viz": "plot_triplets", "model": "SiameseModel", "feature_cache": "FeatureCache",
        "random_state": "capture", "checkpoints": "check_checkpoint",
        "callbacks": "WriteEmbeddings", "media": "LogMedia", "inference": "load_model",
        "gallery": "Gallery", "search": "search", "evaluate": "evaluate",
        "export": "export_model", "export_check": "CHECK_IMAGES",
        "lightning_cli": "SiameseCLI", "commands": "COMMANDS", "commands.data": "build_parser",
        "commands.evaluate": "format_table", "commands.search": "gallery_line",
        "commands.export": "build_parser", "commands.wise_ft": "build_parser",
    }  # fmt: skip
    assert {f"lightning_siamese.{old}" for old in names} == set(MOVED)
    for old, name in names.items():
        module = importlib.import_module(f"lightning_siamese.{old}")
        with pytest.warns(MovedModuleWarning, match=rf"lightning_siamese\.{old}\.{name} is now"):
            value = getattr(module, name)
        new = MOVED[f"lightning_siamese.{old}"]
        home = getattr(value, "__module__", None)
        assert home in (*new, "lightning_siamese.files") or not isinstance(home, str), old
    # A name that is nowhere says where the module went.
    module = importlib.import_module("lightning_siamese.checkpoints")
    with pytest.raises(AttributeError, match=r"moved to lightning_siamese\.training\.checkpoints"):
        module.NoSuchThing  # noqa: B018
    # The old paths that are packages now find their other names too, with the warning.
    import lightning_siamese.cli as cli
    import lightning_siamese.data as data

    with pytest.warns(MovedModuleWarning, match=r"data\.check_root is now .*run_split\.check_root"):
        assert callable(data.check_root)
    assert callable(cli.overview) and cli.TRACEBACK_VARIABLE == "LIGHTNING_SIAMESE_TRACEBACK"
    # The old paths that stayed packages keep their main names, without a warning.
    from lightning_siamese.data import SiameseDataModule
    from lightning_siamese.retrieval import rank_metrics, top_k

    assert SiameseDataModule.__module__ == "lightning_siamese.data.datamodule"
    assert (top_k.__module__, rank_metrics.__module__) == (
        "lightning_siamese.retrieval.nearest",
        "lightning_siamese.retrieval.ranks",
    )
    # A real module of a moved name would win: the finder comes after the real ones.
    assert sys.meta_path[-1].__class__.__name__ == "MovedModuleFinder"


def test_a_config_of_0_1_still_runs(tmp_path: Path) -> None:
    """The old config names lightning_siamese.media.LogMedia, .callbacks.WriteEmbeddings and
    .checkpoints.AtomicCheckpointIO, and head: seed; it trains (a smaller network)."""
    root, run = tmp_path / "pairs", tmp_path / "run"
    write_pairs(root, 20)
    config = tmp_path / "config.yaml"
    shutil.copy(OLD_CONFIG, config)
    args = [
        "fit", "-c", str(config), f"--data.root={root}", f"--trainer.default_root_dir={run}",
        "--model.backbone=timm/test_resnet", "--model.weights=none", "--data.image_size=32",
        "--data.batch_size=4", "--data.num_workers=0", "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2", "--trainer.logger=false",
        "--trainer.enable_progress_bar=false", "--data.split_fractions=[0.6,0.2,0.2]",
    ]  # fmt: skip
    with pytest.warns(MovedModuleWarning) as warned:
        assert main(args) == 0
    messages = {str(w.message).split(":")[0] for w in warned}
    assert {
        "lightning_siamese.media.LogMedia is now lightning_siamese.training.media.LogMedia",
        "lightning_siamese.callbacks.WriteEmbeddings is now "
        "lightning_siamese.training.prediction_writer.WriteEmbeddings",
        "lightning_siamese.checkpoints.AtomicCheckpointIO is now "
        "lightning_siamese.training.checkpoints.AtomicCheckpointIO",
    } <= messages
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["head"] == "seed"  # the old name, as given
    assert any(name.startswith("net.head.7.") for name in checkpoint["state_dict"])  # the MLP
    from lightning_siamese import SiameseModel

    model = SiameseModel.load_from_checkpoint(run / "checkpoints" / "last.ckpt")
    assert isinstance(model.net.head[3], torch.nn.BatchNorm1d)


def test_a_checkpoint_of_0_1_loads(trained_run: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """Hyper-parameters as 0.1 saved them (head: seed, frozen_graph: jit) build the model."""
    from lightning_siamese import SiameseModel

    saved = torch.load(trained_run[2], weights_only=True)
    saved["hyper_parameters"].update(frozen_graph="jit")
    path = tmp_path / "old.ckpt"
    torch.save(saved, path)
    model = SiameseModel.load_from_checkpoint(path)
    assert model.hparams.frozen_graph == "jit"
    assert main(["evaluate", "--ckpt", str(path), "--root", str(trained_run[0]),
                 "--out", str(tmp_path / "eval")]) == 0  # fmt: skip
