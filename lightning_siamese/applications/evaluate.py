"""Evaluate a checkpoint against any pair folder (``lightning-siamese evaluate``).

Every pair of the folder is a query: its left image is searched among all right images by cosine
similarity. Writes ``metrics.json``, ``retrieval.csv`` (one row per query) and the pictures of a
validation (retrieval examples, distance histograms, PCA), and returns the metrics.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from lightning_siamese.applications.inference import embed_files, load_model
from lightning_siamese.data.negatives import draw_negatives
from lightning_siamese.data.pairs import PairDataError, Problem, discover_pairs, require_pairs
from lightning_siamese.files import display_path
from lightning_siamese.retrieval.report import SplitEmbeddings, save_figure, write_table_csv

METRICS_FILE = "metrics.json"


def default_output(checkpoint: Path, root: Path) -> Path:
    """``<run>/evaluate/<root name>`` for ``<run>/checkpoints/x.ckpt``, else next to the file."""
    folder = checkpoint.resolve().parent
    run = folder.parent if folder.name == "checkpoints" else folder
    return run / "evaluate" / (root.resolve().name or "root")


def evaluate(
    checkpoint: str | Path,
    root: str | Path,
    out: str | Path | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | None = None,
    seed: int = 0,
    top_k: int = 5,
    strict: bool = False,
    examples: int = 6,
) -> dict[str, Any]:
    """Evaluate ``checkpoint`` on every pair of ``root``; write the files; return the metrics.

    Raises:
        CheckpointError: the checkpoint cannot be loaded.
        PairDataError: ``root`` has no usable pair (or problems, with ``strict``).
    """
    started = time.perf_counter()
    checkpoint, root = Path(checkpoint), Path(root)
    report = discover_pairs(root)
    pairs = require_pairs(report, strict=strict)
    if len(pairs) < 2:
        raise PairDataError(f"{root} has 1 usable pair: retrieval needs at least 2")
    model = load_model(checkpoint, device)
    files = [path for pair in pairs for path in (pair.left, pair.right)]
    result = embed_files(model, files, batch_size, num_workers)
    if result.unreadable and strict:
        listed = "; ".join(f"{files[i]}: {reason}" for i, reason in result.unreadable[:5])
        raise PairDataError(f"strict mode: files went bad after the check: {listed}")
    if result.unreadable:  # a file that went bad since the check: its pair is left out
        bad = {index // 2 for index, _ in result.unreadable}
        report.problems += [
            Problem(display_path(files[index]), reason) for index, reason in result.unreadable
        ]
        keep = [i for i in range(len(pairs)) if i not in bad]
        rows = {index: row for row, index in enumerate(result.indices)}
        pairs = report.pairs = [pairs[i] for i in keep]
        if len(pairs) < 2:
            raise PairDataError(f"{root}: fewer than 2 readable pairs are left to evaluate")
        order = [rows[2 * i + side] for i in keep for side in (0, 1)]
        embeddings = result.outputs[order]
    else:
        embeddings = result.outputs
    files = [path for pair in pairs for path in (pair.left, pair.right)]
    left, right = embeddings[0::2], embeddings[1::2]
    # Negatives: one image of another pair (another group where there is one), fixed by seed.
    negatives = draw_negatives([pair.group for pair in pairs], f"evaluate:{seed}")
    split = SplitEmbeddings(
        left=[pair.left for pair in pairs],
        right=[pair.right for pair in pairs],
        anchor=left,
        positive=right,
        negative=embeddings[negatives],
    )
    hparams = model.hparams
    metrics: dict[str, Any] = split.metrics(hparams["distance"])
    metrics.update(
        {
            "images": len(files),
            "files_seen": report.files_seen,
            "skipped_files": report.skipped_files,
            "problems": [{"path": p.path, "reason": p.reason} for p in report.problems],
            "checkpoint": str(checkpoint),
            "root": str(root),
            "image_size": hparams["image_size"],
            "backbone": hparams["backbone"],
            "seconds": round(time.perf_counter() - started, 2),
        }
    )
    folder = Path(out) if out is not None else default_output(checkpoint, root)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    write_table_csv(split.table(top_k), folder / "retrieval.csv")
    for name, figure in split.figures(
        hparams["margin"], hparams["distance"], examples=min(examples, len(split)), k=top_k
    ).items():
        save_figure(figure, folder / f"{name}.png")
    metrics["output"] = str(folder)
    return metrics
