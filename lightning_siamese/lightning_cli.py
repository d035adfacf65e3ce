"""The LightningCLI subclass, its config callback and the trainer defaults (imports Lightning)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pytorch_lightning as pl
    from pytorch_lightning.cli import LightningCLI, SaveConfigCallback


def _normalization(backbone: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    from lightning_siamese.embedding import BACKBONES, normalization
    from lightning_siamese.transforms import IMAGENET_MEAN, IMAGENET_STD

    if backbone not in BACKBONES:  # the model reports it, in one line, when it is built
        return IMAGENET_MEAN, IMAGENET_STD
    return normalization(backbone)


def _mean(backbone: str) -> tuple[float, ...]:
    return _normalization(backbone)[0]


def _std(backbone: str) -> tuple[float, ...]:
    return _normalization(backbone)[1]


def _config_callback_class() -> type[SaveConfigCallback]:
    import yaml
    from pytorch_lightning.cli import SaveConfigCallback

    class SaveConfigToLoggers(SaveConfigCallback):
        """Write ``config.yaml`` to the log folder and send the whole resolved config to every
        logger (W&B's run config, TensorBoard's and CSV's hparams), once, as a nested dict.

        The model's and data module's own ``save_hyperparameters`` logging is turned off in CLI
        runs, so the loggers hold the config once rather than twice (nested and flattened).
        """

        def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
            for owner in (pl_module, getattr(trainer, "datamodule", None)):
                if owner is not None:
                    owner._log_hyperparams = False
            super().setup(trainer, pl_module, stage)

        def save_config(
            self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str
        ) -> None:
            config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
            config["subcommand"] = getattr(self, "subcommand", stage)
            for logger in trainer.loggers:
                logger.log_hyperparams(config)

    return SaveConfigToLoggers


def _cli_class() -> type[LightningCLI]:
    from pytorch_lightning.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
    from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

    class SiameseCLI(LightningCLI):
        """LightningCLI with the project's links and defaults."""

        def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
            # A value lives in one place: the image size and the input normalisation of the
            # backbone's pretrained weights flow from one setting to the other.
            parser.link_arguments("data.image_size", "model.image_size")
            parser.link_arguments("model.backbone", "data.mean", compute_fn=_mean)
            parser.link_arguments("model.backbone", "data.std", compute_fn=_std)
            parser.add_argument(
                "--validate_before_fit",
                type=bool,
                default=True,
                help="(fit) validate the untrained model first, so the gain shows in one run",
            )

        def before_instantiate_classes(self) -> None:
            # Cheap checks first: a missing data folder is reported before the model is built
            # (weights loaded or downloaded), not after.
            from lightning_siamese.data import check_root

            config = self.config[self.subcommand] if self.subcommand else self.config
            data = config.get("data")
            if data is not None:
                check_root(data.get("root"), data.get("build_if_missing"), data.get("predict_root"))

        def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
            trainer = super().instantiate_trainer(**kwargs)
            # Trainer.callbacks is set in Trainer.__init__ (by its callback connector) but not
            # declared on the class, so mypy does not know it.
            callbacks: list[Callback] = trainer.callbacks  # type: ignore[attr-defined]
            if trainer.logger is None:  # LearningRateMonitor refuses to run without a logger
                callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
                trainer.callbacks = callbacks  # type: ignore[attr-defined]
            for callback in callbacks:
                if isinstance(callback, SaveConfigCallback):
                    # An attribute of our own, read back by SaveConfigToLoggers.save_config.
                    callback.subcommand = self.subcommand  # type: ignore[attr-defined]
            # A fixed checkpoint folder per run folder, so `--ckpt_path last` finds the last one.
            for callback in trainer.checkpoint_callbacks:
                if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
                    callback.dirpath = str(Path(trainer.default_root_dir) / "checkpoints")
            return trainer

        def before_fit(self) -> None:
            config = self.config[self.subcommand]
            if config.get("validate_before_fit") and not config.get("ckpt_path"):
                self.trainer.validate(self.model, datamodule=self.datamodule)

    return SiameseCLI


def _trainer_defaults() -> dict[str, Any]:
    """Fresh callback instances for every run (tests call ``main`` many times in one process)."""
    from pytorch_lightning.callbacks import LearningRateMonitor

    from lightning_siamese.callbacks import WriteEmbeddings
    from lightning_siamese.checkpoints import BestAndLastCheckpoint
    from lightning_siamese.media import LogMedia

    checkpoint = BestAndLastCheckpoint(
        monitor="val/recall@1",
        mode="max",
        save_last=True,
        filename="epoch{epoch:03d}-recall1-{val/recall@1:.4f}",
        auto_insert_metric_name=False,
    )
    return {
        "callbacks": [checkpoint, LearningRateMonitor(), WriteEmbeddings(), LogMedia()],
        "plugins": [{"class_path": "lightning_siamese.checkpoints.AtomicCheckpointIO"}],
    }
