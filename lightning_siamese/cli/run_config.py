"""The run's config: printed and saved with the image size the run uses, saved whole and only
over a config a run saved, and sent to the loggers once.

Importing this module imports Lightning (its CLI's parser and config callback).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import yaml
from jsonargparse import Namespace
from pytorch_lightning.cli import LightningArgumentParser, SaveConfigCallback

from lightning_siamese.errors import ConfigError
from lightning_siamese.files import atomic_write
from lightning_siamese.models.backbones import resolve_image_size
from lightning_siamese.outputs import claim_file


def image_size_for(image_size: int | None, backbone: str) -> int | None:
    """``data.image_size``, or when unset the backbone's pretrained input size
    (:func:`~lightning_siamese.models.backbones.resolve_image_size`); None for an unknown
    backbone, which the model reports."""
    try:
        return resolve_image_size(image_size, backbone)
    except ConfigError:
        return None


#: The first line of the config files a run saves (``config.yaml``); LightningCLI's own header
#: (``# pytorch_lightning==...``) marks those of earlier releases.
CONFIG_HEADERS = ("# lightning-siamese==", "# pytorch_lightning==")


def config_written_here(path: Path) -> bool:
    """Whether ``path`` is a config file that a run saved (its first line)."""
    with path.open(encoding="utf-8", errors="replace") as handle:
        return handle.readline().startswith(CONFIG_HEADERS)


def claim_config(folder: str | Path) -> None:
    """A run saves ``config.yaml`` in its folder: an :class:`OutputExistsError` when a file of
    that name is there that no run saved (a config of the user's, say)."""
    claim_file(
        Path(folder) / "config.yaml",
        "the run's config file",
        ours=config_written_here,
        how="the run saves its config.yaml there: move the file, or choose another "
        "--trainer.default_root_dir",
    )


class SiameseArgumentParser(LightningArgumentParser):
    """The CLI's parser: a config it prints (``--print_config``) or saves (``config.yaml``)
    shows the image size the run uses, not ``null``; ``config.yaml`` is written whole."""

    def dump(self, cfg: Namespace, *args: Any, **kwargs: Any) -> str:
        data, model = cfg.get("data"), cfg.get("model")
        if data is not None and model is not None and data.get("image_size") is None:
            cfg = cfg.clone()
            cfg.data.image_size = image_size_for(None, model.get("backbone"))
        return super().dump(cfg, *args, **kwargs)

    def save(
        self, cfg: Namespace, path: str, *args: Any, multifile: bool = True, **kwargs: Any
    ) -> None:
        """A single local file (``config.yaml``) is written whole (a kill leaves the old file or
        the new one), and only over a config a run saved; anything else as jsonargparse saves
        it."""
        if (
            args
            or multifile
            or "://" in str(path)
            or (Path(path).exists() and not kwargs.get("overwrite"))
        ):
            super().save(cfg, path, *args, multifile=multifile, **kwargs)
            return
        claim_config(Path(path).parent)  # a file of the user's: never replaced
        options = {
            key: kwargs[key] for key in ("format", "skip_none", "skip_validation") if key in kwargs
        }
        with atomic_write(path, "w", encoding="utf-8") as handle:
            handle.write(self.dump(cfg, **options))


class SaveConfigToLoggers(SaveConfigCallback):
    """Write ``config.yaml`` to the log folder and send the whole resolved config to every
    logger (W&B's run config, TensorBoard's and CSV's hparams), once, as a nested dict with the
    ``subcommand``.

    The model's and data module's own ``save_hyperparameters`` logging is turned off in CLI
    runs, so the loggers hold the config once rather than twice (nested and flattened).
    """

    #: Set by :class:`SiameseCLI` when it builds the trainer: ``fit``, ``test``, ...
    subcommand: str | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for owner in (pl_module, getattr(trainer, "datamodule", None)):
            if owner is not None:
                owner._log_hyperparams = False
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        config["subcommand"] = self.subcommand or stage
        for logger in trainer.loggers:
            logger.log_hyperparams(config)
