"""``lightning-siamese evaluate`` on a checkpoint from ``fit``, through the real entry point."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_verification import reference

from conftest import brute_force_rank_metrics, tiny_args, write_pairs
from lightning_siamese.applications.inference import embed_paths, load_model
from lightning_siamese.cli.main import main


def test_evaluate_writes_metrics_table_and_pictures(
    trained_run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, _, checkpoint = trained_run
    root = tmp_path / "other"
    write_pairs(root, 15, start=100)  # pairs the model never saw
    out = tmp_path / "eval"
    assert (
        main(["evaluate", "--ckpt", str(checkpoint), "--root", str(root), "--out", str(out)]) == 0
    )
    printed = capsys.readouterr().out
    assert "15 pairs (30 images, 0 files skipped)" in printed
    assert "recall@1" in printed and str(out) in printed

    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("recall@1", "recall@5", "recall@10", "recall@20", "mrr", "median_rank"):
        assert key in metrics
    for key in ("cosine_positive", "cosine_negative", "triplet_accuracy"):
        assert -1 <= metrics[key] <= 1
    assert metrics["pairs"] == 15 and metrics["images"] == 30 and metrics["skipped_files"] == 0

    # The figures agree with an independent computation from the checkpoint.
    model = load_model(checkpoint, "cpu")
    left = embed_paths(model, sorted((root / "left").iterdir()))
    right = embed_paths(model, sorted((root / "right").iterdir()))
    similarity = F.normalize(left.double(), dim=1) @ F.normalize(right.double(), dim=1).T
    expected = brute_force_rank_metrics(similarity.tolist())
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value), key
    cosine = torch.nn.functional.cosine_similarity(left, right).mean().item()
    assert metrics["cosine_positive"] == pytest.approx(cosine, abs=1e-5)
    verified = reference(left, right)  # verification: all 15 x 14 non-matching pairs
    for key in ("roc_auc", "eer", "tmr@fmr0.01", "tmr@fmr0.001"):
        assert metrics[key] == pytest.approx(verified[key]), key
    threshold = torch.load(checkpoint, weights_only=True)["match_threshold"]["threshold"]
    assert metrics["match_threshold"]["threshold"] == threshold
    rates = verified["rates"](threshold)  # type: ignore[operator]
    assert (metrics["tmr@val_threshold"], metrics["fmr@val_threshold"]) == pytest.approx(rates)
    assert "chosen on the validation split" in printed and "measured on these pairs" in printed

    table = list(csv.DictReader((out / "retrieval.csv").open()))
    assert len(table) == 15
    assert sum(row["rank"] == "1" for row in table) / 15 == pytest.approx(metrics["recall@1"])
    for picture in ("retrieval", "distances", "projection"):
        assert (out / f"{picture}.png").stat().st_size > 1000


def test_evaluate_defaults_to_the_run_folder_and_reports_bad_files(
    trained_run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pairs, _, checkpoint = trained_run
    run = tmp_path / "run"
    shutil.copytree(checkpoint.parent, run / "checkpoints")
    root = tmp_path / "pairs"
    shutil.copytree(pairs, root)
    (root / "left" / "pair0003.jpg").write_bytes(b"not an image")
    (root / "right" / "lonely.png").write_bytes((root / "right" / "pair0004.png").read_bytes())
    copied = run / "checkpoints" / checkpoint.name
    assert main(["evaluate", "--ckpt", str(copied), "--root", str(root), "--json"]) == 0
    captured = capsys.readouterr()
    metrics = json.loads(captured.out)
    assert metrics["output"] == str(run / "evaluate" / "pairs")
    assert metrics["pairs"] == 39 and metrics["skipped_files"] == 3
    problems = {Path(p["path"]).name for p in metrics["problems"]}
    assert {"pair0003.jpg", "pair0003.png", "lonely.png"} <= problems
    assert "pair0003.jpg" in captured.err  # named on the terminal too

    assert main(["evaluate", "--ckpt", str(copied), "--root", str(root), "--strict"]) == 2
    assert "strict mode" in capsys.readouterr().err


def test_evaluate_errors(
    trained_run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pairs, _, checkpoint = trained_run
    not_a_checkpoint = tmp_path / "model.ckpt"
    not_a_checkpoint.write_text("hello")
    assert main(["evaluate", "--ckpt", str(not_a_checkpoint), "--root", str(pairs)]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err
    assert main(["evaluate", "--ckpt", str(checkpoint), "--root", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_collapsed_model_scores_chance_in_evaluate_and_validate(
    trained_run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every embedding equal (the head's last layer outputs its bias): ties cost what a random
    order costs, so recall@k is k / N, not the 1.0 that counting ties as wins would give."""
    pairs, _, checkpoint = trained_run
    content = torch.load(checkpoint, map_location="cpu", weights_only=True)
    content["state_dict"]["net.head.2.weight"].zero_()  # the pooled head's Linear
    content["state_dict"]["net.head.2.bias"].fill_(1.0)
    collapsed = tmp_path / "collapsed.ckpt"
    torch.save(content, collapsed)

    root = tmp_path / "other"
    write_pairs(root, 15, start=100)
    out = tmp_path / "eval"
    args = ["evaluate", "--ckpt", str(collapsed), "--root", str(root), "--out", str(out)]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for k in (1, 5, 10):
        assert metrics[f"recall@{k}"] == pytest.approx(k / 15), k
    assert metrics["median_rank"] == pytest.approx(8.0)  # (15 + 1) / 2
    table = list(csv.DictReader((out / "retrieval.csv").open()))
    assert {row["rank"] for row in table} == {"8"}

    run = tmp_path / "run"
    assert main(["validate", *tiny_args(pairs, run), f"--ckpt_path={collapsed}"]) == 0
    (logged,) = list(csv.DictReader(next(run.rglob("metrics.csv")).open()))
    count = float(logged["val/pairs"])
    assert count >= 2
    assert float(logged["val/recall@1"]) == pytest.approx(1 / count)
    assert float(logged["val/median_rank"]) == pytest.approx((count + 1) / 2)
