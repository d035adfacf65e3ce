"""Evaluate a checkpoint against any pair folder (``lightning-siamese evaluate``).

Every pair of the folder is a query: its left image is searched among all right images by cosine
similarity; every pair is also judged as a look-alike or not against all non-matching pairs
(verification, at the checkpoint's calibrated threshold). Writes ``metrics.json``,
``retrieval.csv`` (one row per query), ``report.html`` (the results page, to browse) and the
pictures of a validation (retrieval examples, distance histograms, PCA), and returns the metrics.

The output folder is claimed before anything is computed: a new or empty folder, or one an
earlier evaluation wrote (its ``metrics.json`` says so); another folder only with ``force``.
"""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path
from typing import Any

from lightning_siamese.applications.inference import embed_files, load_model, pick_device
from lightning_siamese.data.negatives import draw_negatives
from lightning_siamese.data.pairs import PairDataError, Problem, discover_pairs, require_pairs
from lightning_siamese.files import atomic_write, content_digest, display_path
from lightning_siamese.outputs import claim_folder
from lightning_siamese.retrieval.html_report import REPORT_FILE, write_html_report
from lightning_siamese.retrieval.plots import save_figure
from lightning_siamese.retrieval.report import SplitEmbeddings, write_table_csv
from lightning_siamese.retrieval.reranking import check_rerank, rerank_note, resolve_rerank
from lightning_siamese.training.calibration import measured

METRICS_FILE = "metrics.json"
#: ``metrics.json``'s mark that this command wrote the folder.
WRITTEN_BY = "lightning-siamese evaluate"


def written_here(folder: Path, root: Path | None = None) -> bool:
    """Whether ``folder`` holds an earlier evaluation's output (its ``metrics.json``), its files
    unchanged since (the digests that file records) and, with ``root``, of that pair folder."""
    path = folder / METRICS_FILE
    if not path.is_file():
        return False
    content = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(content, dict) or content.get("written_by") != WRITTEN_BY:
        return False
    if root is not None and content.get("root_path", str(root.resolve())) != str(root.resolve()):
        return False
    return all(
        not (folder / name).is_file() or content_digest(folder / name) == digest
        for name, digest in content.get("files", {}).items()
    )


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
    force: bool = False,
    rerank: str | None = None,
    rerank_k: int | None = None,
) -> dict[str, Any]:
    """Evaluate ``checkpoint`` on every pair of ``root``; write the files into ``out``
    (default :func:`default_output`); return the metrics.

    ``force`` writes into an ``out`` that holds files of somebody else's (files of the same
    names are replaced). ``rerank`` ``csls`` re-ranks retrieval with ``rerank_k``
    (:mod:`~lightning_siamese.retrieval.reranking`), ``none`` does not; None (each): the
    checkpoint's own setting (``model.rerank``). Verification stays on cosine.

    Raises:
        CheckpointError: the checkpoint cannot be loaded.
        PairDataError: ``root`` has no usable pair (or problems, with ``strict``).
        OutputExistsError: ``out`` holds files this command did not write, without ``force``.
        OutputError: ``out`` cannot be created or written.
        DeviceError: ``device`` is not on this machine.
    """
    started = time.perf_counter()
    check_rerank(rerank, rerank_k)  # as given, before any work
    checkpoint, root = Path(checkpoint), Path(root)
    folder = Path(out) if out is not None else default_output(checkpoint, root)
    # The default folder is named by the pair folder's name alone: another folder of that name
    # is not this evaluation's to replace.
    ours = partial(written_here, root=root if out is None else None)
    claim_folder(folder, "the evaluation folder", force, ours)
    pick_device(device)  # a device that is not there, named before any work
    report = discover_pairs(root)
    pairs = require_pairs(report, strict=strict)
    if len(pairs) < 2:
        raise PairDataError(f"{root} has 1 usable pair: retrieval needs at least 2")
    model = load_model(checkpoint, device)
    rerank, rerank_k = resolve_rerank(rerank, rerank_k, model.hparams)
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
        rerank=rerank,
        rerank_k=rerank_k,
    )
    hparams, calibration = model.hparams, model.calibration
    threshold = calibration["threshold"] if calibration else None
    counts = split.verification(threshold)
    metrics: dict[str, Any] = split.metrics(hparams["distance"], threshold, counts)
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
            # The checkpoint's threshold, chosen on its run's validation split; its rates on
            # these pairs are tmr@val_threshold and fmr@val_threshold.
            "match_threshold": calibration,
            "rerank": rerank if rerank == "none" else f"{rerank} (k={rerank_k})",
            "seconds": round(time.perf_counter() - started, 2),
        }
    )
    # The mark first (so a run cut short here leaves a folder this command may write again),
    # the metrics last.
    mark = {"root_path": str(root.resolve())}
    _write_metrics(folder, {"complete": False}, mark)
    table = split.table(top_k)
    written = [write_table_csv(table, folder / "retrieval.csv")]
    notes = [f"checkpoint {display_path(checkpoint)}", f"pairs of {display_path(root)}"]
    if calibration:
        rates = metrics["tmr@val_threshold"], metrics["fmr@val_threshold"]
        notes.append(measured(calibration, "these pairs", *rates))
    if rerank != "none":
        notes.append(f"retrieval {rerank_note(rerank, rerank_k)}")
    shown = {key: value for key, value in metrics.items() if isinstance(value, int | float)}
    title = f"lightning-siamese evaluate: {display_path(root.resolve().name or root)}"
    written.append(
        write_html_report(
            folder / REPORT_FILE, split, table, shown, title, counts, threshold, notes
        )
    )
    for name, figure in split.figures(
        hparams["margin"], hparams["distance"], examples=min(examples, len(split)), k=top_k
    ).items():
        written.append(save_figure(figure, folder / f"{name}.png"))
    digests = {path.name: content_digest(path) for path in written}
    _write_metrics(folder, metrics, {**mark, "files": digests})
    metrics["output"] = str(folder)
    return metrics


def _write_metrics(folder: Path, metrics: dict[str, Any], mark: dict[str, Any]) -> None:
    """``metrics.json``, with the mark that the folder is this command's output (``mark``: the
    pair folder's path and the digests of the files written)."""
    content = {"written_by": WRITTEN_BY, **metrics, **mark}
    with atomic_write(folder / METRICS_FILE, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(content, indent=2) + "\n")
