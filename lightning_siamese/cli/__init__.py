"""The command line: ``main`` routes to the LightningCLI or to the other commands."""

from lightning_siamese.cli.main import TRACEBACK_VARIABLE, TRAINING, main, overview

__all__ = ["TRACEBACK_VARIABLE", "TRAINING", "main", "overview"]
