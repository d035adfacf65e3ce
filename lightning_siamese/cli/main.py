"""``lightning-siamese``: the LightningCLI (fit/validate/test/predict) and the extra commands.

The one place where a :class:`~lightning_siamese.errors.UserError` becomes ``error: <message>``
and exit status 2. The help answers at once: Lightning is imported only for the LightningCLI's
subcommands, and the other commands import torch only after parsing their arguments (so their
``--help`` needs neither); ``data check`` and ``data show`` never import Lightning.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Sequence
from importlib import import_module

from lightning_siamese import __version__
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
    """Every command of ``lightning-siamese`` with one line each (``--help``): written here, so
    the help answers without importing Lightning or torch."""
    width = max(len(name) for name in (*TRAINING, *COMMANDS))
    lines = [
        "usage: lightning-siamese COMMAND [OPTIONS]   (lightning-siamese COMMAND --help: its "
        "options)",
        "",
        "Learn image embeddings from look-alike pairs (Siamese network, triplet loss).",
        "",
        "training (LightningCLI; configs compose: -c base.yaml -c overlay.yaml, then --key value;"
        " --print_config shows every value):",
    ]
    lines += [f"  {name:<{width}}  {text}" for name, text in TRAINING.items()]
    lines += ["", "other commands:"]
    lines += [f"  {name:<{width}}  {command.summary}" for name, command in COMMANDS.items()]
    lines += ["", f"lightning-siamese {__version__}; --version prints it."]
    return "\n".join(lines)


def main(args: Sequence[str] | None = None) -> int:
    """Entry point of the console script, ``python -m lightning_siamese`` and the notebooks."""
    argv = list(sys.argv[1:] if args is None else args)
    if not argv or argv[0] in ("-h", "--help"):
        print(overview(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"lightning-siamese {__version__}")
        return 0
    if argv[0] not in COMMANDS and argv[0] not in TRAINING and not argv[0].startswith("-"):
        known = ", ".join([*TRAINING, *COMMANDS])
        print(f"error: unknown command {argv[0]!r}: choose one of {known}", file=sys.stderr)
        return 2
    training = argv[0] not in COMMANDS
    try:
        if not training:
            return int(import_module(COMMANDS[argv[0]].module).main(argv[1:]))
        from lightning_siamese.cli.lightning_cli import run

        # From the console script, let LightningCLI read sys.argv itself (it warns otherwise).
        run(None if args is None else argv)
    except Exception as error:
        message = error_line(error)
        if message is None or os.environ.get(TRACEBACK_VARIABLE):
            raise
        # Settings, data, numerics and the environment: the message says what and what to
        # do; a traceback into Lightning's internals would only bury it.
        print(f"error: {message}", file=sys.stderr)
        if training:
            print(f"(set {TRACEBACK_VARIABLE}=1 to see the traceback)", file=sys.stderr)
        return 2
    return 0


#: The environment's refusals (permissions, a read-only file system, a full disk, a quota) and
#: paths that cannot be (too long, a loop of links, a file where a folder is needed, a folder
#: that cannot be made): not bugs of the package, whichever line of it met them.
ENVIRONMENT_ERRORS = {
    errno.EACCES: "fix the permissions or choose another path",
    errno.EPERM: "fix the permissions or choose another path",
    errno.EROFS: "the file system is read-only: choose another path",
    errno.ENOSPC: "free some space or choose another path",
    errno.EDQUOT: "free some space or choose another path",
    errno.ENAMETOOLONG: "choose a shorter path",
    errno.ELOOP: "a symbolic link in it points back to itself: fix the link",
    errno.ENOTDIR: "a file stands where a folder is needed: choose another path",
    errno.EISDIR: "a folder stands where a file is needed: choose another path",
    errno.EEXIST: "a file stands where a folder is needed: choose another path",
    errno.ENOENT: "a folder on the way does not exist or cannot hold files: choose another path",
    errno.EBUSY: "it is in use (a mount point?): choose another path",
}
#: Lightning's errors for settings it refuses (``--trainer.devices 0``, ``max_epochs -5``).
SETTINGS_ERRORS = ("MisconfigurationException",)


def error_line(error: BaseException) -> str | None:
    """The one line for a user's error (a :class:`UserError`, a setting Lightning refuses, or
    a path the system cannot use); None for anything else, which keeps its traceback."""
    if isinstance(error, UserError):
        return str(error)
    if any(kind.__name__ in SETTINGS_ERRORS for kind in type(error).__mro__):
        return f"{str(error).strip().splitlines()[0]} (a --trainer setting Lightning refuses)"
    if isinstance(error, OSError) and error.errno in ENVIRONMENT_ERRORS and error.filename:
        return f"cannot use {error.filename}: {error.strerror}; {ENVIRONMENT_ERRORS[error.errno]}"
    return None
