"""``lightning-siamese wise-ft --ckpt PATH --alpha A``: a checkpoint mixed with its pretrained
backbone (WiSE-FT)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from lightning_siamese.cli.registry import output_file


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightning-siamese wise-ft",
        description="Write a checkpoint whose backbone is (1 - alpha) * pretrained + alpha * "
        "fine-tuned (WiSE-FT, Wortsman et al. 2022): often better on images unlike the training "
        "set. The head stays as trained; evaluate, search, test and export load the file.",
    )
    parser.add_argument("--ckpt", required=True, type=Path, help="a checkpoint from `fit`")
    parser.add_argument(
        "--alpha", required=True, type=float, help="1: the fine-tuned model, 0: pretrained"
    )
    parser.add_argument(
        "--out",
        type=output_file,
        help="default: <run>/wise-ft/<ckpt stem>-alpha<alpha>.ckpt (outside checkpoints/, so "
        "--ckpt_path last and best never pick it)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace an --out file that is not an earlier mix (even the checkpoint itself)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from lightning_siamese.models.wise_ft import check_alpha, mix_checkpoint  # after parsing
    from lightning_siamese.training.checkpoint_files import check_checkpoint

    check_alpha(args.alpha)
    check_checkpoint(args.ckpt)  # a missing, truncated or foreign file, named
    folder = args.ckpt.resolve().parent
    run = folder.parent if folder.name == "checkpoints" else folder
    out = args.out or run / "wise-ft" / f"{args.ckpt.stem}-alpha{args.alpha:g}.ckpt"
    record = mix_checkpoint(args.ckpt, args.alpha, out, args.force)
    print(f"wrote {out}: {record['tensors']} backbone tensors mixed at alpha {args.alpha:g}")
    return 0
