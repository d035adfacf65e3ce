"""``lightning-siamese``: the LightningCLI (fit/validate/test/predict) and the extra commands.

The one place where a :class:`~lightning_siamese.errors.UserError` becomes ``error: <message>``
and exit status 2. Lightning is imported only for the LightningCLI's subcommands, so ``data
check`` and the other extra commands start without it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from importlib import import_module

from lightning_siamese.cli.registry import COMMANDS
from lightning_siamese.errors import UserError

TRACEBACK_VARIABLE = "LIGHTNING_SIAMESE_TRACEBACK"

#: LightningCLI's subcommands, with the line ``lightning-siamese --help`` shows for each.
TRAINING = {
    "fit": "train a model on a pair folder (--data.root); checkpoints, split.csv and metrics",
    "validate": "the validation metrics of a checkpoint (--ckpt_path)",
    "test": "retrieval metrics on the held-out test pairs of a run (--ckpt_path)",
    "predict": "embed a folder of images (--data.predict_root) into embeddings.pt",
}


def overview() -> str:
    """Every command of ``lightning-siamese`` with one line each."""
    width = max(len(name) for name in (*TRAINING, *COMMANDS))
    lines = [
        "lightning-siamese: learn image embeddings from look-alike pairs (Siamese network, "
        "triplet loss).",
        "",
        "training (LightningCLI; `lightning-siamese SUBCOMMAND --help` lists every option):",
    ]
    lines += [f"  {name:<{width}}  {text}" for name, text in TRAINING.items()]
    lines += ["", "other commands (`lightning-siamese COMMAND --help`):"]
    lines += [f"  {name:<{width}}  {command.summary}" for name, command in COMMANDS.items()]
    return "\n".join(lines)


def main(args: Sequence[str] | None = None) -> int:
    """Entry point of the console script, ``python -m lightning_siamese`` and the notebooks."""
    argv = list(sys.argv[1:] if args is None else args)
    training = not (argv and argv[0] in COMMANDS)
    try:
        if not training:
            return int(import_module(COMMANDS[argv[0]].module).main(argv[1:]))
        if not argv or argv[0] in ("-h", "--help"):
            print(overview() + "\n")
        from lightning_siamese.cli.lightning_cli import run

        # From the console script, let LightningCLI read sys.argv itself (it warns otherwise).
        run(None if args is None else argv)
    except UserError as error:
        if os.environ.get(TRACEBACK_VARIABLE):
            raise
        # Settings, data and numerics problems: the message says what and what to do; a
        # traceback into Lightning's internals would only bury it.
        print(f"error: {error}", file=sys.stderr)
        if training:
            print(f"(set {TRACEBACK_VARIABLE}=1 to see the traceback)", file=sys.stderr)
        return 2
    return 0
