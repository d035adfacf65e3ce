"""A fit and a test with the W&B overlay and no account, read back from the offline run on disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import tiny_args, write_pairs
from lightning_siamese.cli.main import main

REPO = Path(__file__).resolve().parents[1]
WANDB_OVERLAY = str(REPO / "configs" / "logger" / "wandb.yaml")


def read_run(run_dir: Path) -> list[dict[str, Any]]:
    """Every record of an offline run's ``.wandb`` log, through ``wandb leet inspect --json``."""
    wandb = Path(sys.executable).parent / "wandb"
    result = subprocess.run(
        [str(wandb), "leet", "inspect", "--json", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def history_keys(records: list[dict[str, Any]]) -> set[str]:
    return {key for r in records if r["type"] == "history" for key in r["history"]["item"]}


def run_cli(args: list[str]) -> None:
    """One CLI command, then close its W&B run (a process exit would; a test process does not),
    so the offline log is complete and the next command starts a run of its own."""
    import wandb

    try:
        assert main(args) == 0
    finally:
        wandb.finish()


def wandb_args(root: Path, run: Path) -> list[str]:
    """The tiny setup with the W&B overlay, which puts the W&B run into the run folder."""
    args = [a for a in tiny_args(root, run) if not a.startswith("--trainer.logger")]
    return ["-c", WANDB_OVERLAY, *args]


def test_offline_wandb_run_holds_config_metrics_pictures_artifact_and_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WANDB_DIR")  # (set for every test): the run folder holds the W&B run
    root, run = tmp_path / "pairs", tmp_path / "run"
    write_pairs(root, 40)
    run_cli(["fit", *wandb_args(root, run), "--trainer.max_epochs=2"])
    fit_runs = sorted((run / "wandb").glob("offline-run-*"))
    assert len(fit_runs) == 1, "WANDB_MODE=offline must leave one offline run"
    records = read_run(fit_runs[0])

    # The full resolved LightningCLI config, once, nested (no flattened duplicate).
    configs = [r["config"]["update"] for r in records if r["type"] == "config"]
    config = {key: value for update in configs for key, value in update.items()}
    assert config["subcommand"] == "fit"
    assert config["model"]["backbone"] == "timm/test_resnet"
    assert config["data"]["image_size"] == 32  # model.image_size is linked to it
    assert config["data"]["root"] == str(root)
    assert config["trainer"]["max_epochs"] == 2
    assert config["trainer"]["logger"]["class_path"].endswith("WandbLogger")
    assert "backbone" not in config, "save_hyperparameters' flat copy must not be logged too"

    keys = history_keys(records)
    for key in ("train/loss_step", "train/loss_epoch", "val/loss", "val/recall@1", "val/mrr"):
        assert key in keys
    assert "train/triplet_accuracy" in keys
    assert "lr-Adam" in keys  # LearningRateMonitor
    for picture in ("train/triplets", "val/retrieval", "val/distances", "val/projection"):
        assert f"{picture}._type" in keys, picture
    logged_files = {f["path"] for r in records if r["type"] == "files" for f in r["files"]["files"]}
    for picture in ("triplets", "retrieval", "distances", "projection"):
        assert any(f"/{picture}_" in path for path in logged_files), picture
        assert list((fit_runs[0] / "files" / "media" / "images").rglob(f"{picture}_*.png"))

    artifacts = [r["artifact"] for r in records if r["type"] == "artifact"]
    assert artifacts, "log_model: true must log the checkpoints as artifacts, offline too"
    assert {a["type"] for a in artifacts} == {"model"}
    assert any("best" in a["aliases"] for a in artifacts)
    staged = [Path(a["manifest"]["contents"][0]["local_path"]) for a in artifacts]
    assert all(path.is_file() and path.stat().st_size > 0 for path in staged)
    # The newest checkpoint, last.ckpt, is the artifact with the `latest` alias.
    # Logged in order: the last record of `latest` is the one that holds the alias at the end.
    latest = [a for a in artifacts if "latest" in a["aliases"]][-1]
    assert latest is artifacts[-1]
    latest_file = Path(latest["manifest"]["contents"][0]["local_path"])
    assert latest_file.read_bytes() == (run / "checkpoints" / "last.ckpt").read_bytes()

    # The PNG files are in the run folder as well, whatever the logger.
    for picture in ("train/triplets", "val/retrieval", "val/distances", "val/projection"):
        assert list((run / "media").glob(f"{picture}-step*.png")), picture

    best = sorted((run / "checkpoints").glob("epoch*.ckpt"))[-1]
    run_cli(["test", *wandb_args(root, run), f"--ckpt_path={best}"])
    test_run = next(r for r in sorted((run / "wandb").glob("offline-run-*")) if r not in fit_runs)
    records = read_run(test_run)
    keys = history_keys(records)
    assert {"test/recall@1", "test/recall@5", "test/mrr", "test/median_rank"} <= keys
    assert "test/retrieval._type" in keys
    tables = [
        r["history"]["item"]
        for r in records
        if r["type"] == "history" and "test/retrieval_table._type" in r["history"]["item"]
    ]
    assert len(tables) == 1
    table = tables[0]
    assert table["test/retrieval_table._type"] == "table-file"
    pairs = len((run / "split.csv").read_text().splitlines()) - 1
    test_pairs = sum(
        1 for line in (run / "split.csv").read_text().splitlines() if line.endswith(",test")
    )
    assert 0 < test_pairs < pairs
    assert table["test/retrieval_table.nrows"] == test_pairs
    content = json.loads((test_run / "files" / table["test/retrieval_table.path"]).read_text())
    assert content["columns"][:4] == ["query_image", "query", "true_match", "rank"]
    ranks = [row[3] for row in content["data"]]
    assert all(1 <= rank <= test_pairs for rank in ranks)
    # The same table with its thumbnails (query and top match): offline, W&B keeps a table's
    # images only in an artifact, so the table is logged as one too.
    (table_artifact,) = [
        r["artifact"]
        for r in records
        if r["type"] == "artifact" and r["artifact"]["type"] == "retrieval_table"
    ]
    files = {
        entry["path"]: Path(entry["local_path"]) for entry in table_artifact["manifest"]["contents"]
    }
    (json_name,) = [name for name in files if name.endswith(".table.json")]
    with_images = json.loads(files[json_name].read_text())
    assert len(with_images["data"]) == test_pairs
    top_image = with_images["columns"].index("top_1_image")
    for row in with_images["data"]:
        for image in (row[0], row[top_image]):
            assert image["_type"] == "image-file", image
            assert files[image["path"]].is_file() and files[image["path"]].stat().st_size > 0
    assert (run / "media" / "test" / "retrieval.csv").is_file()
    # The results page, as HTML: the page itself, unchanged.
    (page,) = [
        r["history"]["item"]["test/report.path"]
        for r in records
        if r["type"] == "history" and "test/report.path" in r["history"]["item"]
    ]
    logged = (test_run / "files" / page).read_text(encoding="utf-8")
    assert logged == (run / "media" / "test" / "report.html").read_text(encoding="utf-8")


def test_wandb_files_follow_wandb_dir(tmp_path: Path) -> None:
    """$WANDB_DIR, when set, holds the W&B run (W&B's own rule); unset, the run folder does
    (tests/test_distributed.py: one W&B run under DDP, in the run folder)."""
    root, run = tmp_path / "pairs", tmp_path / "run"
    write_pairs(root, 30)
    wandb_dir = Path(os.environ["WANDB_DIR"])  # set for every test
    run_cli(
        [
            "fit",
            *wandb_args(root, run),
            "--trainer.max_epochs=1",
            "--trainer.logger.init_args.log_model=false",
        ]
    )
    assert len(list((wandb_dir / "wandb").glob("offline-run-*"))) == 1
    assert not (run / "wandb").exists()
