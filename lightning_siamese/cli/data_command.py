"""``lightning-siamese data check|show|emoji|glyphs``: look at and build pair folders."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from lightning_siamese.cli.registry import int_in, output_file, positive_int
from lightning_siamese.data.glyphs import FONT_PAIRS, SIZES
from lightning_siamese.data.negatives import example_triplets
from lightning_siamese.data.pairs import NO_PAIR, discover_pairs
from lightning_siamese.data.splits import SPLITS, assign_splits
from lightning_siamese.errors import PairDataError


def _check(args: argparse.Namespace) -> int:
    try:
        report = discover_pairs(args.root, check_images=not args.no_decode)
    except PairDataError as error:
        if args.json:
            print(
                json.dumps(
                    {
                        "root": str(args.root),
                        "pairs": 0,
                        "error": str(error),
                        "problems": [{"path": str(args.root), "reason": str(error)}],
                    }
                )
            )
            return 2
        raise
    print(report.to_json() if args.json else report.format())
    if not report.pairs:
        if not args.json:
            print(f"error: {NO_PAIR}", file=sys.stderr)
        return 1
    return 1 if args.strict and report.problems else 0


def _show(args: argparse.Namespace) -> int:
    from lightning_siamese.data.images import UNREADABLE, load_image, unreadable_reason
    from lightning_siamese.outputs import claim_file
    from lightning_siamese.retrieval.plots import plot_triplets, save_figure, written_here

    claim_file(args.out, "the picture", args.force, written_here)
    report = discover_pairs(args.root, check_images=False)
    pairs = report.pairs
    if args.split != "all":
        pairs = assign_splits(pairs, seed=args.seed)[args.split]
    if len(pairs) < 2:
        raise PairDataError(f"{len(pairs)} usable pair(s) in {args.root} ({args.split}); need 2")
    chosen = example_triplets(pairs, args.rows, args.seed)
    try:
        images = [(load_image(a), load_image(p), load_image(n)) for a, p, n in chosen]
    except UNREADABLE as error:
        raise PairDataError(
            f"an image of {args.root} cannot be read ({unreadable_reason(error)}): "
            f"`lightning-siamese data check {args.root}` lists every problem"
        ) from error
    figure = plot_triplets(images, [(_caption(a), _caption(p), _caption(n)) for a, p, n in chosen])
    save_figure(figure, args.out)
    print(f"wrote {len(chosen)} triplets to {args.out}")
    return 0


def _caption(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def _emoji(args: argparse.Namespace) -> int:
    from lightning_siamese.data.emoji import build_emoji

    result = build_emoji(
        args.out,
        args.skin_tones,
        args.cache_dir,
        left=args.left,
        right=args.right,
        force=args.force,
    )
    print(f"wrote {result['pairs']} emoji pairs to {args.out} in {result['seconds']:.1f} s")
    return 0


def _glyphs(args: argparse.Namespace) -> int:
    from lightning_siamese.data.glyphs import build_glyphs

    result = build_glyphs(args.out, font_pairs=args.font_pairs, size=args.size, force=args.force)
    print(f"wrote {result['pairs']} glyph pairs to {args.out} in {result['seconds']:.1f} s")
    return 0


FORCE_HELP = (
    "replace an --out folder that holds other files (everything in it is deleted); without "
    "it, only a missing or empty folder or a set built here is replaced"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightning-siamese data", description="Check, show and build left/right pair folders."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser("check", help="report the pairs and every problem in a folder")
    check.add_argument("root", type=Path, help="folder with left/ and right/")
    check.add_argument("--json", action="store_true", help="print a JSON object")
    check.add_argument("--strict", action="store_true", help="exit non-zero on any problem")
    check.add_argument("--no-decode", action="store_true", help="skip decoding every image")
    check.set_defaults(run=_check)

    show = commands.add_parser("show", help="draw a grid of anchor/positive/negative triplets")
    show.add_argument("root", type=Path)
    show.add_argument("--out", type=output_file, required=True, help="PNG file to write")
    show.add_argument("--rows", type=positive_int, default=4, help="triplets drawn")
    show.add_argument("--force", action="store_true", help="replace an --out file of yours")
    show.add_argument("--split", choices=("all", *SPLITS), default="all")
    show.add_argument("--seed", type=int, default=0)
    show.set_defaults(run=_show)

    emoji = commands.add_parser("emoji", help="build the emoji look-alike set (needs npm)")
    emoji.add_argument("--out", type=Path, required=True)
    emoji.add_argument("--force", action="store_true", help=FORCE_HELP)
    emoji.add_argument("--skin-tones", action="store_true", help="add skin-tone variants")
    emoji.add_argument("--cache-dir", type=Path, default=None, help="where npm tarballs are kept")
    designers = ("google", "twitter", "fluent")
    emoji.add_argument("--left", choices=designers, default="google", help="left/'s designer")
    emoji.add_argument(
        "--right",
        choices=designers,
        default="twitter",
        help="right/'s designer (fluent: Microsoft's, rendered from SVG with cairosvg)",
    )
    emoji.set_defaults(run=_emoji)

    glyphs = commands.add_parser("glyphs", help="build font-glyph pairs from matplotlib's fonts")
    glyphs.add_argument("--out", type=Path, required=True)
    glyphs.add_argument("--force", action="store_true", help=FORCE_HELP)
    glyphs.add_argument(
        "--font-pairs", type=int_in(1, len(FONT_PAIRS)), default=len(FONT_PAIRS), help="1 to 8"
    )
    glyphs.add_argument(
        "--size",
        type=int_in(SIZES.start, SIZES.stop - 1),
        default=64,
        help="image side in pixels (8 to 4096)",
    )
    glyphs.set_defaults(run=_glyphs)
    return parser


def main(args: Sequence[str]) -> int:
    parsed = build_parser().parse_args(list(args))
    return int(parsed.run(parsed))
