"""Write N look-alike pairs as 200x200 JPEGs (the Keras example's input format) from a pair folder.

    python benchmarks/make_jpeg_pairs.py --src data/emoji --out data/bench-jpeg --pairs 1000

The source defaults to the emoji demo set (built with npm when missing). Transparent images are
composited on white, resized to a square, saved as RGB JPEG (quality 90), same stem both sides.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from lightning_siamese.data.images import load_image
from lightning_siamese.data.pairs import discover_pairs


def make_jpeg_pairs(src: Path, out: Path, pairs: int, size: int = 200) -> int:
    if not (src / "left").is_dir():
        from lightning_siamese.data.emoji import build_emoji

        build_emoji(src)
    found = discover_pairs(src, check_images=False).pairs[:pairs]
    if len(found) < pairs:
        raise SystemExit(f"{src} has {len(found)} pairs, fewer than {pairs}")
    for side in ("left", "right"):
        (out / side).mkdir(parents=True, exist_ok=True)
    for pair in found:
        for side, path in (("left", pair.left), ("right", pair.right)):
            image = load_image(path).resize((size, size))
            image.save(out / side / f"{pair.name}.jpg", quality=90)
    return len(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", type=Path, default=Path("data/emoji"))
    parser.add_argument("--out", type=Path, default=Path("data/bench-jpeg"))
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--size", type=int, default=200)
    args = parser.parse_args()
    started = time.perf_counter()
    count = make_jpeg_pairs(args.src, args.out, args.pairs, args.size)
    print(f"{count} pairs of {args.size}x{args.size} JPEGs in {args.out} ", end="")
    print(f"({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
