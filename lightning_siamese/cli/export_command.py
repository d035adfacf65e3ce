"""``lightning-siamese export``: the embedding network as ONNX or a ``torch.export`` program."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning_siamese.applications.export_format import (
    CHECK_IMAGES,
    FORMATS,
    INPUT_NAME,
    OUTPUT_NAME,
    RESIZE,
    SCALE,
    TOLERANCE,
)
from lightning_siamese.cli.registry import non_negative_float, output_file, positive_int


def export_format(text: str) -> str:
    """An argparse type: one of the formats; TorchScript's old name is named as such."""
    if text == "torchscript":
        raise argparse.ArgumentTypeError(
            "torchscript is no longer written (TorchScript is deprecated in torch): use pt2, a "
            "torch.export program that torch.export.load runs"
        )
    if text not in FORMATS:
        raise argparse.ArgumentTypeError(f"choose one of {', '.join(FORMATS)}, not {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightning-siamese export",
        description=(
            "Export the embedding network of a checkpoint as ONNX or a torch.export program "
            "(dynamic batch), "
            "with a JSON sidecar that documents the preprocessing, and check it against PyTorch."
        ),
    )
    parser.add_argument("--ckpt", type=Path, required=True, help="checkpoint written by `fit`")
    parser.add_argument(
        "--format",
        type=export_format,
        required=True,
        help="onnx (needs the [export] extra) or pt2 (a torch.export program)",
    )
    parser.add_argument(
        "--out",
        type=output_file,
        default=None,
        help="file to write (default: <ckpt stem>.onnx or <ckpt stem>.pt2 beside it)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace an --out file (or its sidecar) that is not an earlier, unchanged export",
    )
    parser.add_argument(
        "--batch-size-hint",
        type=positive_int,
        default=2,
        metavar="N",
        help="batch size of the example input to export with (default 2); the batch stays dynamic",
    )
    check = parser.add_mutually_exclusive_group()
    check.add_argument(
        "--check",
        metavar="DIR_OR_IMAGE",
        type=Path,
        default=None,
        help=f"check with these images (up to {CHECK_IMAGES}); default: random inputs",
    )
    check.add_argument("--no-check", action="store_true", help="skip running the exported file")
    parser.add_argument(
        "--tolerance",
        type=non_negative_float,
        default=TOLERANCE,
        help=f"largest max |exported - PyTorch| the check accepts (default {TOLERANCE:g})",
    )
    return parser


def main(args: Sequence[str] | None = None) -> int:
    parsed = build_parser().parse_args(None if args is None else list(args))
    from lightning_siamese.applications.export import export_model  # after parsing: torch

    info = export_model(
        parsed.ckpt,
        parsed.format,
        out=parsed.out,
        check=not parsed.no_check,
        check_images=parsed.check,
        tolerance=parsed.tolerance,
        batch_size_hint=parsed.batch_size_hint,
        force=parsed.force,
    )
    status = 0
    check = info.get("check")
    if check is not None:
        for skipped in check["skipped"]:
            print(f"warning: skipped {skipped['path']}: {skipped['reason']}", file=sys.stderr)
        difference = check["max_abs_difference"]
        print(f"check: {check['inputs']}: max |{parsed.format} - pytorch| = {difference:.3g}")
        if not check["passed"]:
            print(
                f"error: the exported file differs from PyTorch by {difference:.3g} "
                f"> {parsed.tolerance:g}; do not use {info['path']}",
                file=sys.stderr,
            )
            status = 1
    print(_summary(info))
    return status


def _summary(info: dict[str, Any]) -> str:
    out, sidecar = Path(info["path"]), info["sidecar"]
    data = out.with_name(out.name + ".data")  # ONNX weights over 2 GiB live beside the graph
    size_mb = sum(path.stat().st_size for path in (out, data) if path.is_file()) / 1e6
    pre = info["preprocessing"]
    size = pre["image_size"]
    mean = ", ".join(f"{v:.3f}" for v in pre["mean"])
    std = ", ".join(f"{v:.3f}" for v in pre["std"])
    normalized = "L2-normalised" if info["output"]["l2_normalized"] else "not normalised"
    lines = [
        f"wrote {out} ({size_mb:.1f} MB, {info['format']} via {info['exporter']}) and {sidecar}",
        f"input '{INPUT_NAME}': float32 (batch, 3, {size}, {size}); "
        f"output '{OUTPUT_NAME}': (batch, {info['output']['dim']}), {normalized}; "
        "compare with cosine similarity",
        f"preprocessing: RGB -> resize to {size}x{size} ({RESIZE}) -> "
        f"{SCALE} -> (x - mean) / std, mean ({mean}), std ({std}), NCHW",
    ]
    return "\n".join(lines)
