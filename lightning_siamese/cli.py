"""``lightning-siamese``: the LightningCLI (fit/validate/test/predict) and the extra commands."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

#: Errors reported as ``error: <message>`` and exit status 2 instead of a traceback: bad
#: settings (ValueError), missing files (OSError), bad data (PairDataError is a ValueError),
#: unusable checkpoints, a non-finite loss, a cache that does not fit in memory.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    OSError,
    FloatingPointError,
    MemoryError,
)
TRACEBACK_VARIABLE = "LIGHTNING_SIAMESE_TRACEBACK"

EXTRA_COMMANDS = {
    "data": "lightning_siamese.commands.data",
    "evaluate": "lightning_siamese.commands.evaluate",
    "search": "lightning_siamese.commands.search",
    "export": "lightning_siamese.commands.export",
}


def main(args: Sequence[str] | None = None) -> int:
    """Entry point of the console script, ``python -m lightning_siamese`` and the notebooks."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] in EXTRA_COMMANDS:
        from importlib import import_module

        return int(import_module(EXTRA_COMMANDS[argv[0]]).main(argv[1:]))

    from lightning_siamese.data import SiameseDataModule
    from lightning_siamese.model import SiameseModel

    try:
        from lightning_siamese.lightning_cli import (
            _cli_class,
            _config_callback_class,
            _trainer_defaults,
        )

        _cli_class()(
            SiameseModel,
            SiameseDataModule,
            # From the console script, let LightningCLI read sys.argv itself (it warns otherwise).
            args=None if args is None else argv,
            trainer_defaults=_trainer_defaults(),
            save_config_callback=_config_callback_class(),
            save_config_kwargs={"overwrite": True},
        )
    except USER_ERRORS as error:
        if os.environ.get(TRACEBACK_VARIABLE):
            raise
        # Settings, data and numerics problems: the message says what and what to do; a
        # traceback into Lightning's internals would only bury it.
        print(f"error: {error}", file=sys.stderr)
        print(f"(set {TRACEBACK_VARIABLE}=1 to see the traceback)", file=sys.stderr)
        return 2
    return 0
