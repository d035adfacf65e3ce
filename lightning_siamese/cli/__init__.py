"""The command line: ``main`` routes to the LightningCLI or to the other commands."""

from lightning_siamese.cli.main import main

__all__ = ["main"]
