"""Font-glyph pairs: one character drawn in two of matplotlib's bundled fonts (pip only).

Small and easy, so good for tests and CI that must not touch the network; too easy to judge a
model by.
"""

from __future__ import annotations

import string
import time
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from lightning_siamese.data.built_sets import building
from lightning_siamese.data.pairs_csv import write_pairs_csv
from lightning_siamese.errors import ConfigError

#: The image sides ``build_glyphs`` draws, in pixels.
SIZES = range(8, 4097)

CHARACTERS = string.digits + string.ascii_uppercase + string.ascii_lowercase

#: (left font, right font) file names in ``matplotlib/mpl-data/fonts/ttf``; each pairs two
#: different families so that a pair is the same character in another hand.
FONT_PAIRS = (
    ("DejaVuSans.ttf", "DejaVuSerif.ttf"),
    ("DejaVuSans-Bold.ttf", "STIXGeneralBol.ttf"),
    ("DejaVuSansMono.ttf", "cmtt10.ttf"),
    ("DejaVuSerif-Italic.ttf", "STIXGeneralItalic.ttf"),
    ("cmr10.ttf", "DejaVuSans-Oblique.ttf"),
    ("cmss10.ttf", "DejaVuSerif-Bold.ttf"),
    ("STIXGeneral.ttf", "DejaVuSansMono-Bold.ttf"),
    ("cmb10.ttf", "DejaVuSans-BoldOblique.ttf"),
)


def font_dir() -> Path:
    """matplotlib's bundled fonts (imported here: the command's parser needs only the
    constants above)."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def render_glyph(character: str, font_path: Path, size: int = 64) -> Image.Image:
    """A grayscale ``size`` x ``size`` image of ``character``, centred, black on white."""
    font = ImageFont.truetype(str(font_path), int(size * 0.7))
    image = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox((0, 0), character, font=font)
    x = (size - (right - left)) / 2 - left
    y = (size - (bottom - top)) / 2 - top
    draw.text((x, y), character, font=font, fill=0)
    return image


def build_glyphs(
    out: str | Path,
    characters: str = CHARACTERS,
    font_pairs: int = len(FONT_PAIRS),
    size: int = 64,
    force: bool = False,
) -> dict[str, float]:
    """Write ``out/left``, ``out/right`` and ``out/pairs.csv`` (group = the character), built
    beside ``out`` and swapped in whole (:mod:`~lightning_siamese.data.built_sets`).

    Args:
        characters: the characters to draw; each gives ``font_pairs`` pairs.
        font_pairs: how many of :data:`FONT_PAIRS` to use (1 to 8).
        size: the images' side in pixels (:data:`SIZES`).
        force: replace an ``out`` that holds other files (everything in it is deleted);
            without it only a missing or empty folder, or a set built here, is replaced.

    Returns:
        ``pairs`` and ``seconds``.
    """
    if not 1 <= font_pairs <= len(FONT_PAIRS):
        raise ConfigError(f"font_pairs must be 1..{len(FONT_PAIRS)}, got {font_pairs}")
    if size not in SIZES:
        raise ConfigError(f"size must be {SIZES.start}..{SIZES.stop - 1} pixels, got {size}")
    start = time.perf_counter()
    with building(out, "glyphs", force) as record:
        pairs = _draw(record["folder"], characters, font_pairs, size)
        record.update(pairs=pairs, font_pairs=font_pairs, size=size)
    return {"pairs": pairs, "seconds": time.perf_counter() - start}


def _draw(out: Path, characters: str, font_pairs: int, size: int) -> int:
    """Draw the pairs into ``out``; how many."""
    for side in ("left", "right"):
        (out / side).mkdir(parents=True, exist_ok=True)
    fonts = font_dir()
    rows = []
    for character in dict.fromkeys(characters):
        code = f"{ord(character):04X}"
        for index, (left_font, right_font) in enumerate(FONT_PAIRS[:font_pairs]):
            name = f"{code}-{index}"
            render_glyph(character, fonts / left_font, size).save(out / "left" / f"{name}.png")
            render_glyph(character, fonts / right_font, size).save(out / "right" / f"{name}.png")
            rows.append(
                {
                    "name": name,
                    "group": code,
                    "character": character,
                    "left_font": Path(left_font).stem,
                    "right_font": Path(right_font).stem,
                }
            )
    columns = ["name", "group", "character", "left_font", "right_font"]
    write_pairs_csv(out / "pairs.csv", rows, columns)
    (out / "NOTICE.md").write_text(
        "# Font-glyph pairs\n\nDrawn by `lightning-siamese data glyphs` from the fonts bundled "
        "with matplotlib: DejaVu (Bitstream Vera licence), STIX (SIL Open Font License) and "
        "Computer Modern (BaKoMa, see matplotlib's LICENSE_BAKOMA).\n",
        encoding="utf-8",
    )
    return len(rows)
