"""``lightning-siamese compare --ckpt PATH IMAGE_A IMAGE_B`` (or ``--pairs FILE.csv``): are these
look-alikes, at the checkpoint's calibrated threshold?"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lightning_siamese.cli.registry import batch_size, num_workers, output_file
from lightning_siamese.files import display_path

if TYPE_CHECKING:
    from lightning_siamese.applications.compare import Comparisons

COLUMNS = ["first", "second", "similarity", "decision", "problem"]


def threshold_line(result: Comparisons) -> str:
    """Where the threshold comes from and what it did on validation."""
    if result.source == "checkpoint" and result.calibration:
        from lightning_siamese.training.calibration import describe

        return f"{describe(result.calibration)} (from the checkpoint)"
    if result.source == "given":
        return (
            f"match threshold {result.threshold:g} (given; its false-match rate on the "
            "validation split is not known)"
        )
    return (
        "no match threshold: this checkpoint has none (written before calibration, or its fit "
        "never validated); pass --threshold to decide"
    )


def format_rows(result: Comparisons) -> str:
    """One line a pair: similarity, decision, the two files."""
    lines = []
    for row in result.rows:
        score = "     -" if row.similarity is None else f"{row.similarity:.4f}"
        files = f"{display_path(row.first)}  {display_path(row.second)}"
        lines.append(f"{score}  {row.decision():<12}  {files}")
    return "\n".join(lines)


def write_csv(result: Comparisons, path: Path) -> None:
    from lightning_siamese.files import atomic_write

    with atomic_write(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for row in result.rows:
            writer.writerow(row.as_dict())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightning-siamese compare",
        description="Compare two images (or each pair of a CSV file): their cosine similarity, "
        "and 'look-alike' or 'different' at the checkpoint's match threshold, which its fit "
        "chose on the validation split for a false-match rate (or at --threshold).",
    )
    parser.add_argument("--ckpt", required=True, type=Path, help="a checkpoint from `fit`")
    parser.add_argument("images", nargs="*", type=Path, help="IMAGE_A IMAGE_B")
    parser.add_argument(
        "--pairs",
        type=Path,
        help="a CSV file: a header row, then two image paths a row (relative to the file)",
    )
    parser.add_argument("--threshold", type=float, help="decide at this cosine similarity instead")
    parser.add_argument("--out", type=output_file, help="also write the results as CSV")
    parser.add_argument(
        "--force", action="store_true", help="replace an --out file compare did not write"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--batch-size", type=batch_size, default=64, help="1 to 65536")
    parser.add_argument("--num-workers", type=num_workers, default=0, help="0 to 256")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    return parser


def _written_here(path: Path) -> bool:
    """Whether ``path`` is an earlier ``--out`` of this command (its header row)."""
    try:
        with path.open(encoding="utf-8") as handle:
            return handle.readline().strip() == ",".join(COLUMNS)
    except (OSError, UnicodeDecodeError):
        return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if bool(args.images) == bool(args.pairs) or (args.images and len(args.images) != 2):
        parser.error("give two images, or --pairs FILE.csv")
    from lightning_siamese.applications.compare import compare, read_pairs_csv  # torch
    from lightning_siamese.outputs import claim_file

    if args.out is not None:
        claim_file(args.out, "the results file", args.force, _written_here)  # before any work
    pairs = read_pairs_csv(args.pairs) if args.pairs else [(args.images[0], args.images[1])]
    result = compare(
        args.ckpt, pairs, args.threshold, args.batch_size, args.num_workers, args.device
    )
    for row in result.problems:
        print(f"warning: not compared: {row.problem}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print(threshold_line(result))
        print(format_rows(result))
    if args.out is not None:
        write_csv(result, args.out)
        print(f"written to {display_path(args.out)}", file=sys.stderr if args.json else sys.stdout)
    return 0
