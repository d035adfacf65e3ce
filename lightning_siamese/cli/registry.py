"""The extra commands of ``lightning-siamese``: argument parsing, printing and exit codes only.

What they do lives in library modules (``pairs``, ``evaluate``, ``gallery``, ``search``,
``export``) that take plain arguments and return values, so a notebook can call them too.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple


class Command(NamedTuple):
    """An extra command: the module whose ``main(argv)`` runs it, and its one-line summary."""

    module: str
    summary: str


COMMANDS = {
    "data": Command(
        "lightning_siamese.cli.data_command",
        "check, show and build left/right pair folders (check, show, emoji, glyphs)",
    ),
    "evaluate": Command(
        "lightning_siamese.cli.evaluate_command",
        "a checkpoint against any left/right folder: metrics.json, retrieval.csv, pictures",
    ),
    "compare": Command(
        "lightning_siamese.cli.compare_command",
        "look-alike or different? two images (or a CSV of pairs) at the calibrated threshold",
    ),
    "search": Command(
        "lightning_siamese.cli.search_command",
        "rank the images of a gallery folder by cosine similarity to query images",
    ),
    "export": Command(
        "lightning_siamese.cli.export_command",
        "the embedding network as ONNX or a torch.export program, checked against PyTorch",
    ),
    "wise-ft": Command(
        "lightning_siamese.cli.wise_ft_command",
        "a checkpoint whose backbone is mixed with its pretrained weights (WiSE-FT)",
    ),
}


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer from ``low`` to ``high``."""

    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low} to {high}, got {value}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its error: "invalid integer value"
    return parse


#: The batch sizes and loader worker counts the commands take: a typo of many digits is
#: refused here, not met as an overflow or thousands of processes.
batch_size = int_in(1, 1 << 16)
num_workers = int_in(0, 256)


def non_negative_float(text: str) -> float:
    """An argparse type: a finite number >= 0."""
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def output_file(text: str) -> Path:
    """An argparse type: the path of a file to write (not one ending in ``/``, which names a
    folder, nor an empty one)."""
    if not text or text.endswith(("/", os.sep)):
        raise argparse.ArgumentTypeError(f"{text!r} is not a file name: give the file to write")
    return Path(text)
