"""The extra commands of ``lightning-siamese``: argument parsing, printing and exit codes only.

What they do lives in library modules (``pairs``, ``evaluate``, ``gallery``, ``search``,
``export``) that take plain arguments and return values, so a notebook can call them too.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
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
