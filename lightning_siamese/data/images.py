"""Reading image files: any mode as upright RGB, the checks a usable image passes, thumbnails.

Pillow only; one rule for every reader in the package: :func:`load_image` raises one of
:data:`UNREADABLE` for a file that cannot be used, and :func:`check_image` says why in words.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

#: Images with a side shorter than this are refused: placeholders and tracking pixels, not pictures.
MIN_IMAGE_SIDE = 8
#: What reading a file that is missing, not an image, truncated, corrupt or too large raises.
UNREADABLE: tuple[type[Exception], ...] = (
    OSError,
    ValueError,
    SyntaxError,
    Image.DecompressionBombError,
)

EMPTY_FILE = "empty file (0 bytes): re-download or remove it"

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


def _refuse_too_large(image: Image.Image) -> None:
    """Raise for an image over Pillow's pixel limit, before it is decoded: Pillow itself only
    warns between its limit and twice the limit, and such an image would be decoded at full
    size for every epoch."""
    limit = Image.MAX_IMAGE_PIXELS
    width, height = image.size
    if limit is not None and width * height > limit:
        raise Image.DecompressionBombError(
            f"Image size ({width * height} pixels) exceeds limit of {limit} pixels"
        )


def load_image(path: str | Path) -> Image.Image:
    """Read an image file as upright (EXIF orientation applied) RGB.

    Raises:
        OSError: the file is missing, not an image, truncated or corrupt.
        PIL.Image.DecompressionBombError: the image has more pixels than Pillow's limit.
    """
    with Image.open(path) as image:
        _refuse_too_large(image)
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
        _refuse_too_large(image)
        if image.format == "JPEG":
            image.draft("RGB", (image.width // 8 or 1, image.height // 8 or 1))
        image.load()
        return size


def unreadable_reason(error: BaseException, path: str | Path | None = None) -> str:
    """What is wrong with the file (at ``path``) whose reading raised ``error`` (one of
    :data:`UNREADABLE`), and what to do."""
    if path is not None and _is_empty(Path(path)):
        return EMPTY_FILE
    if isinstance(error, Image.DecompressionBombError):
        limit = (Image.MAX_IMAGE_PIXELS or 0) / 1e6
        return (
            f"too large to decode safely ({error}); downscale it below {limit:.0f} megapixels "
            "or remove it"
        )
    return f"unreadable or truncated image ({error}); re-download or remove it"


def _is_empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:
        return False


def check_image(path: Path, min_side: int = MIN_IMAGE_SIDE) -> str | None:
    """None if the file decodes as a usable image (both sides at least ``min_side`` pixels),
    else the reason and what to do."""
    try:
        if path.stat().st_size == 0:
            return EMPTY_FILE
        width, height = verify_image(path)
    except UNREADABLE as error:
        return unreadable_reason(error)
    if min(width, height) < min_side:
        return (
            f"too small ({width}x{height} pixels; both sides need at least {min_side}): "
            "probably a placeholder or tracking pixel; replace it with the real image or remove it"
        )
    return None


def thumbnail(path: str | Path, size: int = 96) -> Image.Image:
    """A copy of the image at most ``size`` pixels a side, for pictures; a grey square when the
    file cannot be read (a picture with a gap beats no picture)."""
    try:
        image = load_image(path)
    except Exception:  # any decoding failure; the picture is only an illustration
        return Image.new("RGB", (size, size), (128, 128, 128))
    image.thumbnail((size, size))
    return image
