"""Every image mode comes out as upright 8-bit RGB."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightning_siamese.images import load_image


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
