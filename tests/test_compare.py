"""``lightning-siamese compare``: two images, or a CSV of pairs, at the calibrated threshold."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lightning_siamese.applications.inference import embed_paths, load_model
from lightning_siamese.cli.main import main


def cosine(checkpoint: Path, first: Path, second: Path) -> float:
    model = load_model(checkpoint, "cpu")
    embeddings = embed_paths(model, [first, second]).double()
    return float(F.cosine_similarity(embeddings[:1], embeddings[1:]))


def test_two_images_at_the_calibrated_threshold(
    trained_run: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root, _, checkpoint = trained_run
    calibration = torch.load(checkpoint, weights_only=True)["match_threshold"]
    first, second = root / "left" / "pair0003.jpg", root / "right" / "pair0003.png"
    assert main(["compare", "--ckpt", str(checkpoint), str(first), str(second), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    (row,) = document["pairs"]
    expected = cosine(checkpoint, first, second)
    assert row["similarity"] == pytest.approx(expected, abs=1e-6)
    decision = "look-alike" if row["similarity"] > calibration["threshold"] else "different"
    assert row["decision"] == decision and row["problem"] is None
    assert document["threshold"] == calibration["threshold"]
    assert document["threshold_source"] == "checkpoint"
    assert document["calibration"]["fmr"] == calibration["fmr"] <= 0.01
    # In words: the threshold, where it was chosen and its false-match rate there.
    assert main(["compare", "--ckpt", str(checkpoint), str(first), str(second)]) == 0
    printed = capsys.readouterr().out
    assert f"false-match rate of at most 0.01: there FMR {calibration['fmr']:.4f}" in printed
    assert f"{row['similarity']:.4f}  {decision}" in printed


def test_a_csv_of_pairs_keeps_going_past_bad_files(
    trained_run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, _, checkpoint = trained_run
    (tmp_path / "broken.png").write_bytes(b"not an image")
    listed = tmp_path / "pairs.csv"
    listed.write_text(
        "image_a,image_b\n"
        f"{root / 'left/pair0001.jpg'},{root / 'right/pair0001.png'}\n"
        f"{root / 'left/pair0001.jpg'},broken.png\n"
        f"missing.png,{root / 'right/pair0002.png'}\n"
        f"{root / 'left/pair0002.jpg'},{root / 'right/pair0005.png'}\n",
        encoding="utf-8",
    )
    out = tmp_path / "results.csv"
    args = ["compare", "--ckpt", str(checkpoint), "--pairs", str(listed), "--threshold", "0.2"]
    assert main([*args, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "match threshold 0.2 (given" in captured.out
    assert "broken.png: unreadable" in captured.err and "missing.png: no such file" in captured.err
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [row["decision"] for row in rows][1:3] == ["not compared", "not compared"]
    for row, (a, b) in zip([rows[0], rows[3]], [("0001", "0001"), ("0002", "0005")], strict=True):
        expected = cosine(checkpoint, root / f"left/pair{a}.jpg", root / f"right/pair{b}.png")
        assert float(row["similarity"]) == pytest.approx(expected, abs=1e-6)
        assert row["decision"] == ("look-alike" if expected > 0.2 else "different")
    # Its own earlier file is replaced; a file of somebody else's is not.
    assert main([*args, "--out", str(out)]) == 0
    mine = tmp_path / "mine.csv"
    mine.write_text("my,notes\n", encoding="utf-8")
    assert main([*args, "--out", str(mine)]) == 2
    assert mine.read_text(encoding="utf-8") == "my,notes\n"


def test_errors_and_a_checkpoint_without_a_threshold(
    trained_run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, _, checkpoint = trained_run
    good = str(root / "left" / "pair0001.jpg")
    assert main(["compare", "--ckpt", str(checkpoint), good, str(tmp_path / "gone.png")]) == 2
    assert "gone.png: no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["compare", "--ckpt", str(checkpoint), good])
    saved = torch.load(checkpoint, weights_only=True)
    del saved["match_threshold"]
    older = tmp_path / "older.ckpt"
    torch.save(saved, older)
    capsys.readouterr()
    assert main(["compare", "--ckpt", str(older), good, good]) == 0
    printed = capsys.readouterr().out
    assert "no match threshold" in printed and "no threshold" in printed
