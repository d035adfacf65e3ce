"""Pair discovery collects every problem, skips bad files, and ``data check`` reports them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from conftest import pattern_image, write_pairs
from lightning_siamese.cli.main import main
from lightning_siamese.data.pairs import discover_pairs, require_pairs
from lightning_siamese.errors import PairDataError


def make_messy_folder(root: Path) -> dict[str, str]:
    """10 good pairs plus one of each kind of bad file; returns path -> expected reason word."""
    write_pairs(root, 10)
    left, right = root / "left", root / "right"
    pattern_image(50, 64).save(left / "only_left.png")
    pattern_image(51, 64).save(right / "only_right.png")
    pattern_image(52, 64).save(left / "cut.jpg", quality=95)
    data = (left / "cut.jpg").read_bytes()
    (left / "cut.jpg").write_bytes(data[: len(data) // 2])
    pattern_image(52, 64).save(right / "cut.png")
    (left / "empty.png").write_bytes(b"")
    pattern_image(53, 64).save(right / "empty.png")
    (left / "text.jpg").write_text("not an image at all")
    pattern_image(54, 64).save(right / "text.png")
    (left / "notes.txt").write_text("readme")
    pattern_image(55, 64).save(left / "twice.png")
    pattern_image(55, 64).save(left / "twice.jpg")
    pattern_image(55, 64).save(right / "twice.png")
    (left / ".DS_Store").write_bytes(b"\x00\x01")
    (right / "nested").mkdir()
    # A PNG with a .jpg name is still an image: it pairs.
    pattern_image(56, 64).save(left / "png_named.jpg", format="PNG")
    pattern_image(56, 64).save(right / "png_named.jpg", format="PNG")
    return {
        "left/only_left.png": "no twin",
        "right/only_right.png": "no twin",
        "left/cut.jpg": "truncated",
        "right/cut.png": "its twin left/cut.jpg is unusable",
        "left/empty.png": "empty file",
        "right/empty.png": "its twin left/empty.png is unusable",
        "left/text.jpg": "unreadable",
        "right/text.png": "its twin left/text.jpg is unusable",
        "left/notes.txt": "not an image",
        "left/twice.png": "share the stem",
        "left/twice.jpg": "share the stem",
        "right/twice.png": "its twin left/twice",
        "left/.DS_Store": "hidden",
        "right/nested": "folder",
    }


def test_every_problem_is_collected_and_valid_pairs_kept(tmp_path: Path) -> None:
    root = tmp_path / "messy"
    expected = make_messy_folder(root)
    report = discover_pairs(root)
    assert len(report.pairs) == 11  # 10 good pairs + the PNG named .jpg
    found = {str(Path(p.path).relative_to(root)): p.reason for p in report.problems}
    assert set(found) == set(expected)
    for path, word in expected.items():
        assert word in found[path], (path, found[path])
    assert report.files_seen == 36
    assert report.skipped_files == 36 - 22


def test_strict_mode_lists_every_problem(tmp_path: Path) -> None:
    root = tmp_path / "messy"
    expected = make_messy_folder(root)
    report = discover_pairs(root)
    with pytest.raises(PairDataError) as error:
        require_pairs(report, strict=True)
    for path in expected:
        assert path.split("/")[1] in str(error.value)
    assert len(require_pairs(report)) == 11


def test_extensions_may_differ_and_groups_come_from_pairs_csv(tmp_path: Path) -> None:
    write_pairs(tmp_path, 4, groups={"pair0000": "g1", "pair0001": "g1"})
    report = discover_pairs(tmp_path)
    assert [pair.left.suffix for pair in report.pairs] == [".jpg"] * 4
    assert [pair.right.suffix for pair in report.pairs] == [".png"] * 4
    assert [pair.group for pair in report.pairs] == ["g1", "g1", "pair0002", "pair0003"]


def test_missing_folders_and_no_pairs(tmp_path: Path) -> None:
    with pytest.raises(PairDataError, match="does not exist"):
        discover_pairs(tmp_path / "absent")
    (tmp_path / "left").mkdir()
    with pytest.raises(PairDataError, match="right"):
        discover_pairs(tmp_path)
    (tmp_path / "right").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "left" / "lonely.png")
    report = discover_pairs(tmp_path)
    assert report.pairs == []
    with pytest.raises(PairDataError, match="no usable pair"):
        require_pairs(report)


def test_data_check_text_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "messy"
    expected = make_messy_folder(root)
    assert main(["data", "check", str(root)]) == 0
    text = capsys.readouterr().out
    assert "11 pairs" in text and f"{len(expected)} problems" in text
    assert "cut.jpg" in text and "truncated" in text

    assert main(["data", "check", str(root), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["pairs"] == 11
    assert len(payload["problems"]) == len(expected)
    assert all({"path", "reason"} <= problem.keys() for problem in payload["problems"])

    assert main(["data", "check", str(root), "--strict"]) == 1


def test_data_check_fails_without_usable_pairs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "left").mkdir()
    (tmp_path / "right").mkdir()
    (tmp_path / "left" / "a.jpg").write_text("junk")
    (tmp_path / "right" / "a.jpg").write_text("junk")
    assert main(["data", "check", str(tmp_path), "--json"]) == 1
    payload = json.loads(capsys.readouterr().out)
    assert payload["pairs"] == 0 and len(payload["problems"]) == 2
    assert main(["data", "check", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_pairs_csv_as_spreadsheets_save_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A byte order mark, CRLF line ends, quoted fields, extra columns, a ``File`` column with
    extensions, and a row naming a file that is not there."""
    write_pairs(tmp_path, 4)
    rows = [
        'File,Group,"Comment, with a comma"',
        'pair0000.jpg,"g 1","first, quoted"',
        '"pair0001.png","g 1",',
        "pair0002,g2,x",
        "missing.png,g3,",
    ]
    (tmp_path / "pairs.csv").write_bytes(("\r\n".join(rows) + "\r\n").encode("utf-8-sig"))
    report = discover_pairs(tmp_path)
    groups = {pair.name: pair.group for pair in report.pairs}
    assert groups == {
        "pair0000": "g 1",
        "pair0001": "g 1",
        "pair0002": "g2",
        "pair0003": "pair0003",
    }
    (problem,) = report.problems
    assert problem.path.endswith("pairs.csv")
    assert problem.reason.startswith("1 row(s) name no file in left/ or right/ ('missing')")
    assert main(["data", "check", str(tmp_path)]) == 0  # problems do not fail a check
    assert "4 pairs (3 groups)" in capsys.readouterr().out


def test_names_in_another_unicode_form_pair(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import unicodedata

    write_pairs(tmp_path, 2)
    composed, decomposed = (
        unicodedata.normalize("NFC", "café"),
        unicodedata.normalize("NFD", "café"),
    )
    assert composed != decomposed
    pattern_image(7).save(tmp_path / "left" / f"{composed}.png")
    pattern_image(7, variant=1).save(tmp_path / "right" / f"{decomposed}.png")
    (tmp_path / "pairs.csv").write_text(f"name,group\n{decomposed},drinks\n", encoding="utf-8")
    report = discover_pairs(tmp_path)
    assert report.problems == []
    (cafe,) = [pair for pair in report.pairs if pair.name == composed]
    assert cafe.left.name == f"{composed}.png" and cafe.right.name == f"{decomposed}.png"
    assert cafe.group == "drinks"
    assert main(["data", "check", str(tmp_path)]) == 0
    assert "3 pairs" in capsys.readouterr().out
