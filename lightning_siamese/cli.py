"""``lightning-siamese``: the LightningCLI (fit/validate/test/predict) and the extra commands."""

from __future__ import annotations

import sys
from collections.abc import Sequence

EXTRA_COMMANDS = {"data": "lightning_siamese.data_commands"}


def main(args: Sequence[str] | None = None) -> int:
    """Entry point of the console script, ``python -m lightning_siamese`` and the notebooks."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] in EXTRA_COMMANDS:
        from importlib import import_module

        return int(import_module(EXTRA_COMMANDS[argv[0]]).main(argv[1:]))
    print("usage: lightning-siamese data {check,show,emoji,glyphs} ...", file=sys.stderr)
    return 2
