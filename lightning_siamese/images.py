"""Reading image files of any mode as upright RGB."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

#: File extensions read as images (lower case, with the dot).
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)

#: Images with a side shorter than this are refused: placeholders and tracking pixels, not pictures.
MIN_IMAGE_SIDE = 8

_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert an image of any mode to 8-bit RGB.

    Transparent images (RGBA, LA, PA, palette with transparency) are composited on white, so
    transparent pixels do not turn black. 16-bit grayscale is scaled to 8 bits, not clipped.
    """
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in _SIXTEEN_BIT_MODES or image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        # "I" holds 16-bit PNGs in older Pillow; a float image is assumed to lie in 0..1.
        scale = 255.0 if image.mode == "F" else 255.0 / 65535.0
        array = np.clip(array * scale + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(array, mode="L").convert("RGB")
    if image.mode in {"RGBA", "LA", "PA", "RGBa", "La"}:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        background.alpha_composite(rgba)
        return background.convert("RGB")
    return image.convert("RGB")


def load_image(path: str | Path) -> Image.Image:
    """Read an image file as upright (EXIF orientation applied) RGB.

    Raises:
        OSError: the file is missing, not an image, truncated or corrupt.
        PIL.Image.DecompressionBombError: the image has more pixels than Pillow allows.
    """
    with Image.open(path) as image:
        image.load()
        upright = ImageOps.exif_transpose(image)
        return to_rgb(upright if upright is not None else image)


def verify_image(path: str | Path) -> tuple[int, int]:
    """Decode the whole file once, so truncated or corrupt data raises here, not mid-training;
    return its (width, height).

    JPEGs decode at reduced scale (every byte of the stream is still read), which is several
    times faster than a full decode.

    Raises:
        OSError: the file is missing, not an image, truncated or corrupt.
        PIL.Image.DecompressionBombError: the image has more pixels than Pillow's limit
            (``PIL.Image.MAX_IMAGE_PIXELS``), which Pillow itself only warns about below twice
            the limit.
    """
    with Image.open(path) as image:
        size = image.size
        # Pillow only warns between its limit and twice the limit; such an image would be
        # decoded, at full size, for every epoch. Refuse it here, before decoding.
        limit = Image.MAX_IMAGE_PIXELS
        if limit is not None and size[0] * size[1] > limit:
            raise Image.DecompressionBombError(
                f"Image size ({size[0] * size[1]} pixels) exceeds limit of {limit} pixels"
            )
        if image.format == "JPEG":
            image.draft("RGB", (image.width // 8 or 1, image.height // 8 or 1))
        image.load()
        return size
