"""Demo data builders (glyphs always; emoji when npm reaches its registry) and ``data show``."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import cairo_missing_reason, npm_unreachable_reason
from lightning_siamese.cli.main import main
from lightning_siamese.data.emoji import build_emoji, emoji_group, npm_pack
from lightning_siamese.data.pairs import discover_pairs
from lightning_siamese.errors import NpmError


def test_glyph_builder_writes_real_pairs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "glyphs", "--out", str(tmp_path), "--font-pairs", "2"]) == 0
    assert "124 glyph pairs" in capsys.readouterr().out
    report = discover_pairs(tmp_path)
    assert len(report.pairs) == 124 and report.problems == []
    left = np.asarray(Image.open(tmp_path / "left" / "0041-0.png"))
    right = np.asarray(Image.open(tmp_path / "right" / "0041-0.png"))
    assert left.shape == (64, 64) and left.min() < 50 and left.max() == 255  # ink on paper
    assert not np.array_equal(left, right)  # two fonts
    rows = list(csv.DictReader((tmp_path / "pairs.csv").open()))
    assert {row["group"] for row in rows if row["character"] == "A"} == {"0041"}


def test_emoji_groups_join_variants_but_not_flags() -> None:
    walking = {"1F6B6", "1F6B6-200D-2642-FE0F", "1F6B6-200D-2640-FE0F", "1F6B6-1F3FD"}
    assert {emoji_group(code) for code in walking} == {"1F6B6"}
    technologists = {"1F468-200D-1F4BB", "1F469-200D-1F4BB", "1F9D1-200D-1F4BB"}
    assert {emoji_group(code) for code in technologists} == {"1F4BB"}
    assert emoji_group("1F1F9-1F1E9") != emoji_group("1F1F7-1F1F4")  # Chad, Romania


def test_emoji_without_npm_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(NpmError, match="npm, which is not installed"):
        npm_pack(["emoji-datasource-google@16.0.0"], tmp_path / "cache")


def test_emoji_with_an_unreachable_registry_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed")
    npmrc = tmp_path / "npmrc"
    npmrc.write_text("registry=http://127.0.0.1:9/\nfetch-retries=0\n")
    monkeypatch.setenv("NPM_CONFIG_USERCONFIG", str(npmrc))
    monkeypatch.setenv("NPM_CONFIG_CACHE", str(tmp_path / "npm-cache"))
    with pytest.raises(NpmError, match="registry is not reachable"):
        npm_pack(["emoji-datasource-google@16.0.0"], tmp_path / "cache", timeout=120)


@pytest.mark.network
def test_emoji_builder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reason = npm_unreachable_reason()
    if reason:
        pytest.skip(reason)
    assert main(["data", "emoji", "--out", str(tmp_path / "emoji")]) == 0
    assert "1911 emoji pairs" in capsys.readouterr().out
    report = discover_pairs(tmp_path / "emoji")
    assert len(report.pairs) == 1911 and report.problems == []
    groups = {pair.name: pair.group for pair in report.pairs}
    assert groups["1f6b6-200d-2642-fe0f"] == groups["1f6b6"]
    assert "CC-BY" in (tmp_path / "emoji" / "NOTICE.md").read_text()
    image = Image.open(tmp_path / "emoji" / "left" / "1f600.png")
    assert image.mode == "RGBA" and image.size == (64, 64)
    again = build_emoji(tmp_path / "again")  # the npm tarballs are reused from the cache
    assert again["pairs"] == 1911


def test_data_show_draws_the_triplet_grid(pair_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "grid.png"
    assert main(["data", "show", str(pair_folder), "--out", str(out), "--rows", "3"]) == 0
    grid = Image.open(out)
    assert grid.width > 300 and grid.height > 300
    assert main(["data", "show", str(pair_folder), "--out", str(out), "--split", "test"]) == 0


@pytest.mark.network
def test_emoji_builder_with_fluent_drawings(tmp_path: Path) -> None:
    """Microsoft's Fluent emoji (SVG, rendered) against Google's: the same names and groups,
    a drawing of the same emoji (the grinning face is yellow, with dark eyes), and the
    credits of both designers."""
    reason = npm_unreachable_reason()
    if reason:
        pytest.skip(reason)
    reason = cairo_missing_reason()
    if reason:
        pytest.skip(reason)
    out = tmp_path / "fluent"
    assert main(["data", "emoji", "--out", str(out), "--right", "fluent"]) == 0
    report = discover_pairs(out)
    assert len(report.pairs) > 1500 and report.problems == []
    names = {pair.name for pair in report.pairs}
    assert {"1f600", "2764-fe0f", "1f6b6-200d-2642-fe0f"} <= names  # FE0F matched either way
    assert not any(name.startswith("1f1") and "-1f1" in name for name in names)  # no flags
    face = np.asarray(Image.open(out / "right" / "1f600.png").convert("RGBA"), dtype=float)
    assert face.shape == (64, 64, 4)
    opaque = face[face[..., 3] > 200]
    assert len(opaque) > 64 * 64 / 2  # a round face filling most of the square
    red, green, blue = np.median(opaque[..., :3], axis=0)
    assert red > 200 and 120 < green < red and blue < 100  # yellow-orange skin
    assert (opaque[..., :3].sum(axis=1) < 200).any()  # dark eyes and mouth
    notice = (out / "NOTICE.md").read_text()
    assert "Fluent Emoji" in notice and "Noto Emoji" in notice
    with pytest.raises(ValueError, match="two designers"):
        build_emoji(tmp_path / "same", left="fluent", right="fluent")
