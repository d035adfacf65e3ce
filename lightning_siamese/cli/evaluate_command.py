"""``lightning-siamese evaluate --ckpt PATH --root DIR``: a checkpoint against any pair folder."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning_siamese.cli.registry import batch_size, num_workers, positive_int

SHOWN = (
    "recall@1",
    "recall@5",
    "recall@10",
    "recall@20",
    "mrr",
    "median_rank",
    "roc_auc",
    "eer",
    "tmr@fmr0.01",
    "tmr@fmr0.001",
    "cosine_positive",
    "cosine_negative",
    "triplet_accuracy",
)


def format_table(metrics: dict[str, Any]) -> str:
    """The headline figures, one per line."""
    lines = [
        f"{metrics['root']}: {metrics['pairs']} pairs ({metrics['images']} images, "
        f"{metrics['skipped_files']} files skipped) in {metrics['seconds']:.1f} s"
    ]
    if metrics.get("rerank", "none") != "none":
        lines.append(f"retrieval re-ranked: {metrics['rerank']}")
    width = max(len(name) for name in SHOWN)
    lines += [f"  {name:<{width}}  {metrics[name]:.4f}" for name in SHOWN]
    calibration = metrics.get("match_threshold")
    if calibration:
        from lightning_siamese.training.calibration import measured  # plain Python

        tmr, fmr = metrics["tmr@val_threshold"], metrics["fmr@val_threshold"]
        lines.append(measured(calibration, "these pairs", tmr, fmr))
    else:
        lines.append(
            "no match threshold in this checkpoint (written before calibration, or its fit "
            "never validated)"
        )
    lines.append(f"written to {metrics['output']}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightning-siamese evaluate",
        description="Evaluate a checkpoint on every pair of a left/right folder (each left "
        "image is a query among all right images).",
    )
    parser.add_argument("--ckpt", required=True, type=Path, help="a checkpoint from `fit`")
    parser.add_argument("--root", required=True, type=Path, help="folder with left/ and right/")
    parser.add_argument(
        "--out", type=Path, help="output folder (default: <run>/evaluate/<root name>)"
    )
    parser.add_argument("--batch-size", type=batch_size, default=64, help="1 to 65536")
    parser.add_argument("--num-workers", type=num_workers, default=0, help="0 to 256")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--seed", type=int, default=0, help="draws each pair's negative")
    parser.add_argument(
        "--top-k", type=positive_int, default=5, help="results per query in the table"
    )
    parser.add_argument(
        "--rerank",
        choices=("none", "csls"),
        help="csls: re-rank retrieval, lowering the gallery's hubs; none: plain cosine "
        "(default: the checkpoint's model.rerank)",
    )
    parser.add_argument(
        "--rerank-k", type=positive_int, help="CSLS's nearest queries (default: the checkpoint's)"
    )
    parser.add_argument("--strict", action="store_true", help="fail on any bad file")
    parser.add_argument(
        "--force",
        action="store_true",
        help="write into an --out folder that holds other files (same names are replaced)",
    )
    parser.add_argument("--json", action="store_true", help="print metrics.json instead")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from lightning_siamese.applications.evaluate import evaluate  # after parsing: torch

    metrics = evaluate(
        args.ckpt,
        args.root,
        args.out,
        args.batch_size,
        args.num_workers,
        args.device,
        args.seed,
        args.top_k,
        args.strict,
        force=args.force,
        rerank=args.rerank,
        rerank_k=args.rerank_k,
    )
    if metrics["problems"]:
        shown = "\n".join(f"  {p['path']}: {p['reason']}" for p in metrics["problems"][:10])
        print(f"{len(metrics['problems'])} problems; not evaluated:\n{shown}", file=sys.stderr)
    print(json.dumps(metrics, indent=2) if args.json else format_table(metrics))
    return 0
