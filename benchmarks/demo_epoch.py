"""Where a demo epoch's time goes: loader, frozen part, trainable tail, backward, optimizer,
validation, checkpoints and pictures, timed inside one ``fit -c configs/demo.yaml``.

    .venv/bin/python benchmarks/demo_epoch.py                 # 3 epochs, data seed 0
    .venv/bin/python benchmarks/demo_epoch.py --epochs 2 -- --data.seed 1
    .venv/bin/python benchmarks/demo_epoch.py --setting fp32= --setting \
        'bf16=--trainer.precision bf16-mixed'           # settings compared in one run

Timers wrap the model's own calls (``forward_frozen``, ``forward_tail``), Lightning's hooks
(backward, the optimizer step), the checkpoint writer and the pictures' callback; the loader's
share is the wait between one training batch's end and the next one's start. The first epoch
(which holds the one-off costs: the validation set's frozen-feature cache, the step-0
validation, worker start) is printed apart from the mean of the others. Needs ``data/emoji``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lightning_siamese.cli.lightning_cli import run  # noqa: E402
from lightning_siamese.training.checkpoints import AtomicCheckpointIO  # noqa: E402
from lightning_siamese.training.media import LogMedia  # noqa: E402

PARTS = (
    "loader wait",
    "frozen part",
    "trainable tail",
    "loss, statistics, logging",
    "backward",
    "optimizer step",
    "validation (without pictures)",
    "pictures",
    "checkpoints",
)


class EpochClock(pl.Callback):
    """Seconds per part and epoch (see the module docstring)."""

    def __init__(self) -> None:
        self.seconds: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.epoch_seconds: dict[int, float] = {}
        self._marks: dict[str, float] = {}
        self._epoch = -1
        self._validating = False
        self._batch_model = 0.0  # frozen part and tail of the batch running

    def add(self, part: str, seconds: float) -> None:
        self.seconds[self._epoch][part] += seconds  # -1: before the first epoch

    def timed(self, part: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent = time.perf_counter() - started
                if part == "pictures" or not self._validating:  # (inside validation's time)
                    self.add(part, spent)
                if part in ("frozen part", "trainable tail"):
                    self._batch_model += spent

        return wrapper

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if getattr(self, "_wrapped", False):  # (the step-0 validation set up first)
            return
        self._wrapped = True
        net = pl_module.net  # type: ignore[attr-defined]
        net.forward_frozen = self.timed("frozen part", net.forward_frozen)
        net.forward_tail = self.timed("trainable tail", net.forward_tail)
        io = trainer.strategy.checkpoint_io
        if isinstance(io, AtomicCheckpointIO):
            io.save_checkpoint = self.timed("checkpoints", io.save_checkpoint)  # type: ignore[method-assign]
        for callback in trainer.callbacks:  # type: ignore[attr-defined]
            if isinstance(callback, LogMedia):
                # (_report draws through _emit: the two outer calls, not _emit itself)
                for name in ("_report", "on_train_start"):
                    setattr(callback, name, self.timed("pictures", getattr(callback, name)))

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # An epoch runs from its start to the next one's (its checkpoint is saved after every
        # callback's epoch end, this one's too).
        self._close_epoch()
        self._epoch = trainer.current_epoch
        self._marks["epoch"] = time.perf_counter()
        self._marks["batch end"] = time.perf_counter()

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, index: int) -> None:
        self.add("loader wait", time.perf_counter() - self._marks["batch end"])
        self._marks["batch start"] = time.perf_counter()
        self._batch_model = 0.0

    def on_before_backward(self, trainer: Any, pl_module: Any, loss: Any) -> None:
        now = time.perf_counter()
        step = now - self._marks["batch start"] - self._batch_model
        self.add("loss, statistics, logging", step)
        self._marks["backward"] = now

    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.add("backward", time.perf_counter() - self._marks["backward"])
        self._marks["after backward"] = time.perf_counter()

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, index: int
    ) -> None:
        now = time.perf_counter()
        self.add("optimizer step", now - self._marks["after backward"])
        self._marks["batch end"] = now

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._marks["validation"] = time.perf_counter()
        self._validating = True
        self._pictures_before = self.seconds[self._epoch]["pictures"]

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Callbacks after this one (the pictures) are not inside; those before are taken out.
        spent = time.perf_counter() - self._marks["validation"]
        self._validating = False
        pictures = self.seconds[self._epoch]["pictures"] - self._pictures_before
        self.add("validation (without pictures)", spent - pictures)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close_epoch()

    def _close_epoch(self) -> None:
        if self._epoch >= 0 and self._epoch not in self.epoch_seconds:
            self.epoch_seconds[self._epoch] = time.perf_counter() - self._marks["epoch"]


def timed_fit(epochs: int, extra: list[str]) -> tuple[Any, float]:
    """One fit of the demo config with the clock: (the clock, the fit's seconds)."""
    with tempfile.TemporaryDirectory(prefix="demo-epoch-") as folder:
        started = time.perf_counter()
        cli = run(
            ["fit", "-c", str(REPO / "configs" / "demo.yaml"),
             f"--data.root={REPO / 'data' / 'emoji'}",  # the checkout's, from any folder
             f"--trainer.default_root_dir={folder}",
             f"--trainer.max_epochs={epochs}", "--trainer.enable_progress_bar=false",
             '--trainer.callbacks+={"class_path": "demo_epoch.EpochClock"}', *extra],
        )  # fmt: skip
        total = time.perf_counter() - started
    # The CLI built the clock from its class path (the module ``demo_epoch``, not ``__main__``).
    callbacks = cli.trainer.callbacks  # type: ignore[attr-defined]
    (clock,) = [c for c in callbacks if type(c).__name__ == "EpochClock"]
    return clock, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="NAME=ARGS",
        help="compare settings in this one run: a fit per setting, its own fit arguments "
        "(after those after --); e.g. --setting fp32= --setting 'bf16=--trainer.precision "
        "bf16-mixed'",
    )
    parser.add_argument("extra", nargs="*", help="after --: arguments for fit")
    args = parser.parse_args()
    if not args.setting:
        report(*timed_fit(args.epochs, args.extra))
        return
    summary = []
    for setting in args.setting:
        name, _, words = setting.partition("=")
        print(f"\n## {name}: {' '.join([*args.extra, *words.split()])}")
        clock, total = timed_fit(args.epochs, [*args.extra, *words.split()])
        report(clock, total)
        epochs = sorted(clock.epoch_seconds)
        later = [clock.epoch_seconds[e] for e in epochs[1:] or epochs]
        before = total - sum(clock.epoch_seconds.values())
        summary.append((name, total, before, sum(later) / len(later)))
    print("\n| setting | fit (s) | before epoch 0 (s) | later epoch, mean (s) | epoch vs first |")
    print("|---|---|---|---|---|")
    for name, total, before, epoch in summary:
        print(
            f"| {name} | {total:.1f} | {before:.1f} | {epoch:.1f} | {epoch / summary[0][3]:.2f}x |"
        )


def report(clock: Any, total: float) -> None:
    epochs = sorted(clock.epoch_seconds)
    later = epochs[1:] or epochs
    print(f"\nfit of {len(epochs)} epochs: {total:.1f} s, start-up and step-0 validation included")
    print("| part | epoch 0 (s) | later epochs, mean (s) | share of a later epoch |")
    print("|---|---|---|---|")
    epoch_mean = sum(clock.epoch_seconds[e] for e in later) / len(later)
    for part in PARTS:
        first = clock.seconds[epochs[0]][part]
        mean = sum(clock.seconds[e][part] for e in later) / len(later)
        print(f"| {part} | {first:.1f} | {mean:.1f} | {mean / epoch_mean:.0%} |")
    known = sum(sum(clock.seconds[e][p] for p in PARTS) for e in later) / len(later)
    first_known = sum(clock.seconds[epochs[0]][p] for p in PARTS)
    rest = clock.epoch_seconds[epochs[0]] - first_known
    print(
        f"| the rest (Lightning, hooks) | {rest:.1f} | {epoch_mean - known:.1f} "
        f"| {(epoch_mean - known) / epoch_mean:.0%} |"
    )
    print(f"| **epoch** | {clock.epoch_seconds[epochs[0]]:.1f} | {epoch_mean:.1f} | 100% |")


if __name__ == "__main__":
    main()
