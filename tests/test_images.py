"""Every image mode comes out as upright 8-bit RGB."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import write_pairs
from lightning_siamese.data.folders import list_images
from lightning_siamese.data.images import load_image, thumbnail
from lightning_siamese.data.pairs import discover_pairs


def write_png_rgb16(path: Path, array: np.ndarray) -> None:
    """A 48-bit RGB PNG (Pillow cannot write one), encoded by hand."""
    height, width, _ = array.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    rows = b"".join(b"\x00" + array[row].astype(">u2").tobytes() for row in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
    path.write_bytes(png + chunk(b"IEND", b""))


def pixels(path: Path) -> np.ndarray:
    image = load_image(path)
    assert image.mode == "RGB"
    return np.asarray(image)


def test_rgba_and_la_composite_on_white(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    rgba.putpixel((0, 0), (0, 0, 255, 255))  # one opaque blue pixel
    rgba.save(tmp_path / "a.png")
    out = pixels(tmp_path / "a.png")
    assert out[1, 1].tolist() == [255, 255, 255]
    assert out[0, 0].tolist() == [0, 0, 255]

    la = Image.new("LA", (4, 4), (0, 128))  # half-transparent black
    la.save(tmp_path / "la.png")
    assert pixels(tmp_path / "la.png")[0, 0].tolist() == pytest.approx([127, 127, 127], abs=1)


def test_palette_with_and_without_transparency(tmp_path: Path) -> None:
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    palette.save(tmp_path / "opaque.png")
    assert pixels(tmp_path / "opaque.png")[0, 0].tolist() == [10, 200, 30]
    palette.save(tmp_path / "clear.png", transparency=1)
    assert pixels(tmp_path / "clear.png")[0, 0].tolist() == [255, 255, 255]


def test_grayscale_bilevel_and_cmyk(tmp_path: Path) -> None:
    Image.new("L", (4, 4), 77).save(tmp_path / "l.png")
    assert pixels(tmp_path / "l.png")[0, 0].tolist() == [77, 77, 77]
    Image.new("1", (4, 4), 1).save(tmp_path / "bw.png")
    assert pixels(tmp_path / "bw.png")[0, 0].tolist() == [255, 255, 255]
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")  # pure red ink
    red = pixels(tmp_path / "cmyk.jpg")[4, 4]
    assert red[0] > 200 and red[1] < 60 and red[2] < 60


def test_sixteen_bit_grayscale_and_rgb_are_scaled_not_clipped(tmp_path: Path) -> None:
    gray = np.full((4, 4), 32768, dtype=np.uint16)
    Image.fromarray(gray).save(tmp_path / "gray16.png")
    assert pixels(tmp_path / "gray16.png")[0, 0].tolist() == pytest.approx([128, 128, 128], abs=1)

    rgb = np.zeros((4, 4, 3), dtype=np.uint16)
    rgb[..., 0] = 65535
    rgb[..., 2] = 16384
    write_png_rgb16(tmp_path / "rgb16.png", rgb)
    assert pixels(tmp_path / "rgb16.png")[0, 0].tolist() == pytest.approx([255, 0, 64], abs=1)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 20, 20))  # white left half
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display turned 90 degrees clockwise
    image.save(tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=95)
    upright = pixels(tmp_path / "rotated.jpg")
    assert upright.shape == (40, 20, 3)
    assert upright[5, 10].mean() > 200  # the white half is now on top
    assert upright[35, 10].mean() < 50


def test_truncated_file_raises(tmp_path: Path) -> None:
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError, match=r"(?i)truncated"):
        load_image(tmp_path / "cut.jpg")


def a_mixed_folder(root: Path) -> None:
    """Images at two depths, and one of every entry that is not an image to read."""
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".hidden").mkdir()
    Image.new("RGB", (16, 16)).save(root / "b.png")
    Image.new("RGB", (16, 16)).save(root / "sub" / "a.jpg")
    Image.new("RGB", (16, 16)).save(root / "sub" / "deeper" / "c.webp")
    Image.new("RGB", (16, 16)).save(root / ".hidden" / "secret.png")
    Image.new("RGB", (16, 16)).save(root / ".dotfile.png")
    (root / "notes.txt").write_text("not an image")
    (root / "linked.png").symlink_to(root / "b.png")
    (root / "dangling.png").symlink_to(root / "gone.png")
    (root / "loop.png").symlink_to(root / "loop.png")
    (root / "folder-link").symlink_to(root / "sub")
    os.mkfifo(root / "pipe.png")


def test_one_rule_for_which_files_a_folder_holds(tmp_path: Path) -> None:
    a_mixed_folder(tmp_path)
    listing = list_images(tmp_path)
    assert [image.relative for image in listing.files] == [
        "b.png",
        "linked.png",
        "sub/a.jpg",
        "sub/deeper/c.webp",
    ]
    reasons = {Path(path).name: reason for path, reason in listing.skipped}
    assert sorted(reasons) == ["dangling.png", "folder-link", "loop.png", "pipe.png"]
    assert reasons["dangling.png"].startswith("broken symbolic link")
    assert reasons["loop.png"].startswith("symbolic link loop")
    assert reasons["pipe.png"].startswith("not a regular file")
    assert reasons["folder-link"] == "symbolic link to a folder, not followed"
    top = list_images(tmp_path, recursive=False)
    assert [image.relative for image in top.files] == ["b.png", "linked.png"]


def test_pair_folders_follow_the_same_rule(tmp_path: Path) -> None:
    """A FIFO in a pair folder is named as such and never opened (opening one blocks)."""
    write_pairs(tmp_path, 3)
    os.mkfifo(tmp_path / "left" / "pipe.png")
    (tmp_path / "right" / "pipe.png").write_bytes(
        (tmp_path / "right" / "pair0000.png").read_bytes()
    )
    report = discover_pairs(tmp_path)
    reasons = {Path(problem.path).parent.name: problem.reason for problem in report.problems}
    assert reasons["left"].startswith("not a regular file")
    assert reasons["right"].startswith("its twin left/pipe.png is unusable")
    assert len(report.pairs) == 3


def test_thumbnail_of_an_unreadable_file_is_a_grey_square(tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_text("not an image")
    image = thumbnail(tmp_path / "bad.png", 24)
    assert image.size == (24, 24) and image.getpixel((0, 0)) == (128, 128, 128)
    Image.new("RGB", (80, 40), (9, 9, 9)).save(tmp_path / "wide.png")
    assert thumbnail(tmp_path / "wide.png", 24).size == (24, 12)
