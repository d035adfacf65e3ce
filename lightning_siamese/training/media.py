"""The pictures of a run, as PNG files in the run folder and as images/tables in the loggers.

- training start: a grid of training triplets as the model sees them (after augmentation);
- every validation (and test): retrieval examples (fixed queries, their top-k with scores, the
  true match framed), histograms of positive and negative distances with the margin, and a PCA
  projection of the embeddings;
- test: a per-query table (file names, rank of the true match, the top-k), as CSV and, with
  W&B, as a ``wandb.Table``; and the results page ``report.html``
  (:mod:`~lightning_siamese.retrieval.html_report`: metrics, ROC curve, similarity histograms,
  every query's top-k with thumbnails, filtered and searched in the browser), with W&B as HTML.

PNG files go to ``<default_root_dir>/media/<split>/<name>-step<global step>.png`` whatever the
logger; W&B gets them under ``<split>/<name>``, TensorBoard as images.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from matplotlib.figure import Figure
from PIL import Image
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from pytorch_lightning.utilities import rank_zero_info

from lightning_siamese.data.images import load_image, thumbnail
from lightning_siamese.data.sampling import TripletSampler
from lightning_siamese.data.transforms import denormalize
from lightning_siamese.data.triplets import TripletDataset
from lightning_siamese.files import display_path
from lightning_siamese.retrieval.html_report import REPORT_FILE, write_html_report
from lightning_siamese.retrieval.plots import plot_triplets, save_figure
from lightning_siamese.retrieval.report import SplitEmbeddings, write_table_csv
from lightning_siamese.retrieval.reranking import rerank_note
from lightning_siamese.training.calibration import measured


class LogMedia(pl.Callback):
    """Draw and log the run's pictures (see the module docstring).

    Args:
        examples: query rows in the retrieval picture.
        top_k: results per query in the pictures and the test table.
        triplets: rows of the training-triplet grid (0: none).
        every_n_validations: draw validation pictures every n-th validation (and always the last).
        table_images: test-table rows that carry thumbnails in W&B (the rest: names only).
    """

    def __init__(
        self,
        examples: int = 6,
        top_k: int = 5,
        triplets: int = 8,
        every_n_validations: int = 1,
        table_images: int = 200,
    ) -> None:
        self.examples = examples
        self.top_k = top_k
        self.triplets = triplets
        self.every_n_validations = max(1, every_n_validations)
        self.table_images = table_images
        self._validations = 0
        self.written: list[Path] = []

    # Hooks -----------------------------------------------------------------------------------

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or self.triplets <= 0:
            return
        dataset = _dataset(trainer.train_dataloader)
        if dataset is None:
            return
        sampler = TripletSampler(dataset.groups, seed=0, views=dataset.views)
        picks = [key for key, _ in zip(sampler, range(self.triplets), strict=False)]
        mean = getattr(getattr(trainer, "datamodule", None), "hparams", {}).get("mean")
        std = getattr(getattr(trainer, "datamodule", None), "hparams", {}).get("std")
        rows, captions = [], []
        for key in picks:
            anchor, negative = key.anchor, key.negative
            # Read the files here (with the feature cache the loader's items carry no images),
            # augmented by the key's own seed (or views), as training would: no global draw.
            item = dataset.load_triplet(
                anchor, negative, key.augment_seed, read=load_image, views=key.views
            )
            images = [item["anchor"], item["positive"], item["negative"]]
            if mean is not None and std is not None:
                images = [denormalize(image, mean, std) for image in images]
            rows.append((images[0], images[1], images[2]))
            captions.append(
                (
                    dataset.image_path(2 * anchor).name,
                    dataset.image_path(2 * anchor + 1).name,
                    dataset.image_path(negative).name,
                )
            )
        self._emit(trainer, "train", {"triplets": plot_triplets(rows, captions)})

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._validations += 1
        last = trainer.state.fn == "fit" and trainer.current_epoch + 1 >= (trainer.max_epochs or 0)
        if (self._validations - 1) % self.every_n_validations == 0 or last:
            self._report(trainer, pl_module, "val")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._report(trainer, pl_module, "test")

    # Work ------------------------------------------------------------------------------------

    def _report(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str) -> None:
        if not trainer.is_global_zero:
            return
        metrics = getattr(pl_module, "metrics", {})
        gathered = getattr(metrics[split], "last_gathered", {}) if split in metrics else {}
        loaders = trainer.val_dataloaders if split == "val" else trainer.test_dataloaders
        dataset = _dataset(loaders)
        if not gathered or dataset is None:
            return
        hparams = pl_module.hparams
        rerank = hparams.get("rerank", "none") if split == "test" else "none"  # as the metrics
        embeddings = split_embeddings(dataset, gathered, rerank, hparams.get("rerank_k", 10))
        figures = embeddings.figures(
            hparams.get("margin"), hparams.get("distance", "squared_l2"), self.examples, self.top_k
        )
        self._emit(trainer, split, figures)
        if split == "test":
            rows = embeddings.table(self.top_k)
            path = write_table_csv(rows, _folder(trainer, split) / "retrieval.csv")
            self.written.append(path)
            self._log_table(trainer, f"{split}/retrieval_table", rows, embeddings)
            rank_zero_info(f"test retrieval table ({len(rows)} queries): {path}")
            page = self._write_page(trainer, pl_module, embeddings, rows)
            rank_zero_info(f"test results page: {page}")

    def _emit(self, trainer: pl.Trainer, split: str, figures: dict[str, Figure]) -> None:
        step = trainer.global_step
        for name, figure in figures.items():
            path = save_figure(figure, _folder(trainer, split) / f"{name}-step{step:06d}.png")
            self.written.append(path)
            key = f"{split}/{name}"
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    logger.log_image(key=key, images=[str(path)], step=step)
                elif isinstance(logger, TensorBoardLogger):
                    pixels = np.asarray(Image.open(path).convert("RGB"))
                    logger.experiment.add_image(key, pixels, step, dataformats="HWC")

    def _write_page(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        split: SplitEmbeddings,
        rows: list[dict[str, Any]],
    ) -> Path:
        """``media/test/report.html``, and to W&B as HTML."""
        calibration = getattr(pl_module, "calibration", None)
        threshold = calibration["threshold"] if calibration else None
        metrics = {
            key.split("/", 1)[1]: float(value)
            for key, value in trainer.callback_metrics.items()
            if key.startswith("test/")
        }
        notes = [f"run folder {display_path(trainer.default_root_dir)}"]
        if calibration:
            rates = (
                metrics.get("tmr@val_threshold", math.nan),
                metrics.get("fmr@val_threshold", math.nan),
            )
            pairs = "the test split (pairs not used to choose it)"
            notes.append(measured(calibration, pairs, *rates))
        if split.rerank != "none":
            notes.append(f"retrieval {rerank_note(split.rerank, split.rerank_k)}")
        path = _folder(trainer, "test") / REPORT_FILE
        counts = split.verification(threshold)
        title = f"lightning-siamese test: {display_path(Path(trainer.default_root_dir).name)}"
        write_html_report(path, split, rows, metrics, title, counts, threshold, notes)
        self.written.append(path)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                with path.open(encoding="utf-8") as handle:
                    page = wandb.Html(handle, inject=False)
                # As Lightning logs: W&B drops a step below its own count (a test after fit).
                logger.experiment.log(
                    {"test/report": page, "trainer/global_step": trainer.global_step}
                )
        return path

    def _log_table(
        self, trainer: pl.Trainer, key: str, rows: list[dict[str, Any]], split: SplitEmbeddings
    ) -> None:
        loggers = [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]
        if not loggers:
            return
        import wandb

        columns = ["query_image", "query", "true_match", "rank", "true_match_score", "top_k"]
        columns.append("top_1_image")
        by_name = {display_path(path.name): path for path in split.right}
        data = []
        for number, row in enumerate(rows):
            top = "; ".join(f"{name} ({score:.3f})" for name, score in row["top_k"])
            images: list[Any] = [None, None]
            if number < self.table_images:
                best = by_name[row["top_k"][0][0]]
                images = [
                    wandb.Image(thumbnail(split.left[number], 64)),
                    wandb.Image(thumbnail(best, 64)),
                ]
            data.append(
                [
                    images[0],
                    row["query"],
                    row["true_match"],
                    row["rank"],
                    row["true_match_score"],
                    top,
                    images[1],
                ]
            )
        for logger in loggers:
            logger.log_table(key=key, columns=columns, data=data, step=trainer.global_step)
            # Also as an artifact: an offline run keeps a logged table's images only there (the
            # run's own copy holds the word "Image"; wandb/wandb#4611), and `wandb sync` uploads it.
            artifact = wandb.Artifact(key.replace("/", "-"), type="retrieval_table")
            artifact.add(
                wandb.Table(columns=list[str | int](columns), data=data), "retrieval_table"
            )
            logger.experiment.log_artifact(artifact)


def split_embeddings(
    dataset: TripletDataset, gathered: dict[str, Any], rerank: str = "none", rerank_k: int = 10
) -> SplitEmbeddings:
    """A :class:`SplitEmbeddings` from a split's dataset and its gathered metric states."""
    pairs = [dataset.pairs[int(i)] for i in gathered["index"]]
    return SplitEmbeddings(
        left=[pair.left for pair in pairs],
        right=[pair.right for pair in pairs],
        anchor=gathered["anchor"],
        positive=gathered["positive"],
        negative=gathered["negative"],
        rerank=rerank,
        rerank_k=rerank_k,
    )


def _dataset(loaders: Any) -> TripletDataset | None:
    if isinstance(loaders, list | tuple):
        loaders = loaders[0] if loaders else None
    dataset = getattr(loaders, "dataset", None)
    return dataset if isinstance(dataset, TripletDataset) else None


def _folder(trainer: pl.Trainer, split: str) -> Path:
    return Path(trainer.default_root_dir) / "media" / split
