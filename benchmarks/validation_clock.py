"""A callback for benchmarks: the wall-clock time of every validation and its recall@1, one
JSON line each, appended to a file (``benchmarks/demo_results.py``'s time-quality curve).

    --trainer.callbacks+='{"class_path": "validation_clock.ValidationClock",
                           "init_args": {"path": "runs/x/clock.jsonl"}}'

with ``benchmarks/`` on ``PYTHONPATH``. Only the global-zero process writes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytorch_lightning as pl


class ValidationClock(pl.Callback):
    """Append ``{"time": unix seconds, "epoch", "step", "recall@1"}`` after each validation.

    Args:
        path: the JSON-lines file.
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        recall = trainer.callback_metrics.get("val/recall@1")
        line = {
            "time": time.time(),
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "recall@1": None if recall is None else float(recall),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(line) + "\n")
