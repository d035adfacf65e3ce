"""The extra commands of ``lightning-siamese``: argument parsing, printing and exit codes only.

What they do lives in library modules (``pairs``, ``evaluate``, ``gallery``, ``search``,
``export``) that take plain arguments and return values, so a notebook can call them too.
"""

from __future__ import annotations

from typing import NamedTuple


class Command(NamedTuple):
    """An extra command: the module whose ``main(argv)`` runs it, and its one-line summary."""

    module: str
    summary: str


COMMANDS = {
    "data": Command(
        "lightning_siamese.commands.data",
        "check, show and build left/right pair folders (check, show, emoji, glyphs)",
    ),
    "evaluate": Command(
        "lightning_siamese.commands.evaluate",
        "a checkpoint against any left/right folder: metrics.json, retrieval.csv, pictures",
    ),
    "search": Command(
        "lightning_siamese.commands.search",
        "rank the images of a gallery folder by cosine similarity to query images",
    ),
    "export": Command(
        "lightning_siamese.commands.export",
        "the embedding network as ONNX or TorchScript, checked against PyTorch",
    ),
}
