"""The LightningCLI of ``fit``/``validate``/``test``/``predict``: the subclass, its config
callback and the trainer defaults.

Importing this module imports Lightning; ``cli.main`` imports it only for those subcommands.
Subclass :class:`SiameseCLI` to add links or arguments of your own::

    from lightning_siamese.cli.lightning_cli import SiameseCLI, run
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.loggers import WandbLogger

from lightning_siamese import __version__
from lightning_siamese.cli.ckpt_path import (
    checkpoint_folder,
    print_warning,
    reconcile,
    require_training_state,
    resolve,
    saved_content,
)
from lightning_siamese.cli.run_config import (
    SaveConfigToLoggers,
    SiameseArgumentParser,
    claim_config,
    image_size_for,
)
from lightning_siamese.data.datamodule import SiameseDataModule
from lightning_siamese.data.run_split import check_root
from lightning_siamese.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from lightning_siamese.errors import ConfigError, DeviceError
from lightning_siamese.models.backbones import normalization
from lightning_siamese.models.embedding import SKIP_PRETRAINED
from lightning_siamese.outputs import writable_folder
from lightning_siamese.training.checkpoint_files import check_finite
from lightning_siamese.training.checkpoints import BestAndLastCheckpoint
from lightning_siamese.training.media import LogMedia
from lightning_siamese.training.model import SiameseModel
from lightning_siamese.training.prediction_writer import WriteEmbeddings


def backbone_mean(backbone: str) -> tuple[float, ...]:
    """The input mean of the backbone's pretrained weights (ImageNet's for an unknown name,
    which the model reports in one line when it is built)."""
    try:
        return normalization(backbone)[0]
    except ConfigError:
        return IMAGENET_MEAN


def backbone_std(backbone: str) -> tuple[float, ...]:
    """The input standard deviation of the backbone's pretrained weights."""
    try:
        return normalization(backbone)[1]
    except ConfigError:
        return IMAGENET_STD


def check_accelerator(accelerator: str) -> None:
    """A :class:`DeviceError` when ``--trainer.accelerator`` asks for a device this machine
    lacks (Lightning's own message names a backend, not the machine)."""
    name = accelerator.lower()
    missing = (name in ("gpu", "cuda") and not torch.cuda.is_available()) or (
        name == "mps" and not torch.backends.mps.is_available()
    )
    if missing:
        raise DeviceError(
            f"--trainer.accelerator {accelerator}: this machine has no such device that torch "
            "can use (no GPU, no driver, or a CPU-only torch); use --trainer.accelerator cpu, "
            "or auto (a GPU when there is one)"
        )


def place_wandb_run(logger: WandbLogger, run_folder: str) -> None:
    """A W&B logger given no folder (``save_dir: null``, as ``configs/logger/wandb.yaml``)
    keeps its W&B run under ``$WANDB_DIR`` when that is set (W&B's own rule), else under the
    run folder, beside its checkpoints and ``split.csv``; the run folder is its ``save_dir``
    (where ``config.yaml`` goes). Called before the W&B run starts."""
    # A folder W&B cannot use makes it fall back to /tmp silently: named here instead.
    if os.environ.get("WANDB_DIR"):
        writable_folder(os.environ["WANDB_DIR"], "the W&B runs ($WANDB_DIR)", create=True)
    if logger.save_dir is not None:
        writable_folder(logger.save_dir, "the W&B run (the logger's save_dir)", create=True)
        return
    Path(run_folder).mkdir(parents=True, exist_ok=True)  # W&B falls back to /tmp otherwise
    # WandbLogger keeps its folders in these two (it starts the W&B run on first use).
    logger._save_dir = os.fspath(run_folder)
    logger._wandb_init["dir"] = os.environ.get("WANDB_DIR") or logger._save_dir


class SiameseCLI(LightningCLI):
    """LightningCLI with the project's links, checks and defaults.

    ``data.image_size`` sets ``model.image_size`` (unset: the backbone's pretrained input size;
    the data module follows the model), and the backbone sets the input normalisation
    (``data.mean``, ``data.std``);
    ``--validate_before_fit`` (on by default) logs the untrained model's figures at step 0; a
    missing data folder or ``--ckpt_path`` file is reported before the model is built;
    checkpoints go to ``<default_root_dir>/checkpoints``.
    """

    #: The checkpoint file ``--ckpt_path`` names (``last`` resolved), once parsed.
    checkpoint_file: Path | None = None

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        # The saved config's first line marks it as a run's (config_written_here).
        kwargs.setdefault(
            "dump_header",
            [f"lightning-siamese=={__version__}", f"pytorch_lightning=={pl.__version__}"],
        )
        return super().init_parser(**kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # A value lives in one place: the image size and the input normalisation of the
        # backbone's pretrained weights flow from one setting to the other.
        parser.link_arguments(
            ("data.image_size", "model.backbone"), "model.image_size", compute_fn=image_size_for
        )
        parser.link_arguments("model.backbone", "data.mean", compute_fn=backbone_mean)
        parser.link_arguments("model.backbone", "data.std", compute_fn=backbone_std)
        parser.add_argument(
            "--validate_before_fit",
            type=bool,
            default=True,
            help="(fit) validate the untrained model first, so the gain shows in one run",
        )

    def _parse_ckpt_path(self) -> None:
        # Lightning's own step (the checkpoint's hyper-parameters over the parsed config) with
        # the checks of `ckpt_path`: the file named and checked before anything is built, a
        # resume refused from a file without training state, and model options that would be
        # ignored refused or named (see its module).
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        ckpt_path = config.get("ckpt_path")
        if ckpt_path is None:
            return
        path = resolve(subcommand, str(ckpt_path), checkpoint_folder(config))
        if path is None:
            return
        self.checkpoint_file = path
        content = saved_content(path)
        if subcommand == "fit":
            require_training_state(path, content)
        check_finite(path, content.get("state_dict") or {})
        saved = content.get("hyper_parameters") or {}
        data = config.get("data") or {}
        hparams = reconcile(
            dict(config.get("model") or {}),
            saved,
            data.get("image_size"),
            print_warning,
        )
        update: dict[str, Any] = {"model": hparams}
        if data.get("image_size") is None and saved.get("image_size") is not None:
            # The link computes the model's size from the data's: the checkpoint's size, not
            # the backbone's default.
            update["data"] = {"image_size": saved["image_size"]}
        try:
            self.config = self.parser.parse_object({subcommand: update}, self.config)
        except SystemExit:
            sys.stderr.write("Parsing of ckpt_path hyperparameters failed!\n")
            raise

    def instantiate_classes(self) -> None:
        if self.checkpoint_file is None:
            super().instantiate_classes()
            return
        # The checkpoint holds every tensor: the backbone's pretrained weights (a download, or
        # the file the fit started from) are neither needed nor read.
        token = SKIP_PRETRAINED.set(True)
        try:
            super().instantiate_classes()
        finally:
            SKIP_PRETRAINED.reset(token)

    def before_instantiate_classes(self) -> None:
        # Cheap checks first: a missing data folder is reported before the model is built
        # (weights loaded or downloaded), not after.
        config = self.config[self.subcommand] if self.subcommand else self.config
        data = config.get("data")
        if data is not None:
            check_root(data.get("root"), data.get("build_if_missing"), data.get("predict_root"))
        trainer = config.get("trainer") or {}
        check_accelerator(str(trainer.get("accelerator") or "auto"))
        run_folder = trainer.get("default_root_dir") or os.getcwd()
        writable_folder(run_folder, "the run", create=True)
        claim_config(run_folder)

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        # Trainer.callbacks is set in Trainer.__init__ (by its callback connector) but not
        # declared on the class, so mypy does not know it.
        callbacks: list[Callback] = trainer.callbacks  # type: ignore[attr-defined]
        if trainer.logger is None:  # LearningRateMonitor refuses to run without a logger
            callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
            trainer.callbacks = callbacks  # type: ignore[attr-defined]
        for callback in callbacks:
            if isinstance(callback, SaveConfigToLoggers):
                callback.subcommand = self.subcommand
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                place_wandb_run(logger, trainer.default_root_dir)
        # A fixed checkpoint folder per run folder, so `--ckpt_path last` finds the last one.
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
                callback.dirpath = str(Path(trainer.default_root_dir) / "checkpoints")
        return trainer

    def before_fit(self) -> None:
        config = self.config[self.subcommand]
        if config.get("ckpt_path"):
            self._check_resumed_split(str(config["ckpt_path"]))
        elif config.get("validate_before_fit"):
            self.trainer.validate(self.model, datamodule=self.datamodule)

    def _check_resumed_split(self, ckpt_path: str) -> None:
        """Refuse a resume with another split before the fit writes anything (its config,
        logs, ``split.csv``); the data module checks again as Lightning restores it."""
        path = self.checkpoint_file or Path(ckpt_path)
        if not path.is_file() or not isinstance(self.datamodule, SiameseDataModule):
            return  # another keyword, or nothing there: Lightning reports it
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        state = saved.get(type(self.datamodule).__qualname__)
        state = state or saved.get("datamodule_hyper_parameters") or {}  # older checkpoints
        self.datamodule.check_resume(state, path)


def trainer_defaults() -> dict[str, Any]:
    """The callbacks and plugins every run gets (``--print_config`` shows them): the best and
    every-epoch last checkpoints, the learning-rate monitor, the ``predict`` writer, the run's
    pictures, atomic checkpoint writes. Fresh instances on every call (tests and notebooks call
    :func:`run` many times in one process)."""
    checkpoint = BestAndLastCheckpoint(
        monitor="val/recall@1",
        mode="max",
        save_last=True,
        filename="epoch{epoch:03d}-recall1-{val/recall@1:.4f}",
        auto_insert_metric_name=False,
    )
    return {
        "callbacks": [checkpoint, LearningRateMonitor(), WriteEmbeddings(), LogMedia()],
        "plugins": [{"class_path": "lightning_siamese.training.checkpoints.AtomicCheckpointIO"}],
    }


def run(args: Sequence[str] | None = None, **kwargs: Any) -> SiameseCLI:
    """Run the LightningCLI on ``args`` (``sys.argv`` when None); ``kwargs`` go to
    :class:`SiameseCLI` (e.g. ``run=False`` to build the model, data and trainer only)."""
    return SiameseCLI(
        SiameseModel,
        SiameseDataModule,
        args=None if args is None else list(args),
        trainer_defaults=trainer_defaults(),
        save_config_callback=SaveConfigToLoggers,
        parser_class=SiameseArgumentParser,
        save_config_kwargs={"overwrite": True},
        **kwargs,
    )
