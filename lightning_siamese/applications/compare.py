"""Is this a look-alike? Pairs of images compared by a checkpoint (``lightning-siamese compare``).

Each pair gets its cosine similarity and, at a match threshold, a decision: a look-alike when the
similarity is above it. The threshold is the one the checkpoint's fit calibrated on its
validation split (:mod:`~lightning_siamese.training.calibration`), or one given. Plain arguments
in, a :class:`Comparisons` out; the command only prints it.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning_siamese.applications.inference import embed_files, load_model, pick_device
from lightning_siamese.errors import InputError
from lightning_siamese.files import display_path
from lightning_siamese.retrieval.verification import pair_scores


@dataclass
class Comparison:
    """One pair: its ``similarity`` and ``match`` (None when it could not be compared, then
    ``problem`` says why, or when there is no threshold)."""

    first: Path
    second: Path
    similarity: float | None = None
    match: bool | None = None
    problem: str | None = None

    def decision(self) -> str:
        if self.problem is not None:
            return "not compared"
        return {True: "look-alike", False: "different", None: "no threshold"}[self.match]

    def as_dict(self) -> dict[str, Any]:
        return {
            "first": str(self.first),
            "second": str(self.second),
            "similarity": self.similarity,
            "decision": self.decision(),
            "problem": self.problem,
        }


@dataclass
class Comparisons:
    """The pairs compared, and the threshold used: ``source`` is ``checkpoint`` (then
    ``calibration`` holds what it did on validation), ``given`` or ``none``."""

    rows: list[Comparison]
    threshold: float | None
    source: str
    calibration: dict[str, Any] | None = None
    checkpoint: str = ""
    problems: list[Comparison] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "threshold": self.threshold,
            "threshold_source": self.source,
            "calibration": self.calibration,
            "pairs": [row.as_dict() for row in self.rows],
        }


def read_pairs_csv(path: str | Path) -> list[tuple[Path, Path]]:
    """The pairs of a CSV file: a header row, then one pair a row in its first two columns;
    relative paths are taken from the CSV file's folder.

    Raises:
        InputError: the file is missing, unreadable, or has a row with fewer than two cells.
    """
    path = Path(path)
    try:  # utf-8-sig: a file saved by a spreadsheet starts with a byte order mark
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read the pairs file {display_path(path)}: {error}") from error
    if len(rows) < 2:
        raise InputError(
            f"{display_path(path)} holds no pair: it needs a header row, then one pair a row "
            "(two image paths)"
        )
    pairs = []
    for number, row in enumerate(rows[1:], start=2):
        cells = [cell.strip() for cell in row]
        if len(cells) < 2 or not cells[0] or not cells[1]:
            raise InputError(f"{display_path(path)}, row {number}: needs two image paths")
        pairs.append((path.parent / cells[0], path.parent / cells[1]))
    return pairs


def compare(
    checkpoint: str | Path,
    pairs: Sequence[tuple[str | Path, str | Path]],
    threshold: float | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | None = None,
) -> Comparisons:
    """Compare each pair of image files with ``checkpoint``'s embedding; decide at
    ``threshold`` (default: the checkpoint's calibrated one). Every distinct file is embedded
    once. A pair with a missing or unreadable file is kept with its ``problem`` and the others
    are still compared.

    Raises:
        CheckpointError: the checkpoint cannot be loaded.
        InputError: no pair given, ``threshold`` not a number, or no pair could be compared.
        DeviceError: ``device`` is not on this machine.
    """
    if not pairs:
        raise InputError("no pair to compare: give two images, or a CSV file of pairs")
    if threshold is not None and not math.isfinite(threshold):
        raise InputError(f"--threshold must be a finite number, got {threshold}")
    pick_device(device)
    rows = [Comparison(Path(first), Path(second)) for first, second in pairs]
    files = sorted({path for row in rows for path in (row.first, row.second)}, key=str)
    missing = {path: "no such file" for path in files if not path.is_file()}
    readable = [path for path in files if path not in missing]
    model = load_model(checkpoint, device)
    result = embed_files(model, readable, batch_size, num_workers) if readable else None
    problems = dict(missing)
    where: dict[Path, int] = {}
    if result is not None:
        problems.update({readable[index]: reason for index, reason in result.unreadable})
        where = {readable[index]: row for row, index in enumerate(result.indices)}
    calibration = model.calibration
    source = "given" if threshold is not None else "checkpoint" if calibration else "none"
    if threshold is None and calibration:
        threshold = calibration["threshold"]
    good = [row for row in rows if row.first not in problems and row.second not in problems]
    if good and result is not None:
        first = result.outputs[[where[row.first] for row in good]]
        second = result.outputs[[where[row.second] for row in good]]
        for row, score in zip(good, pair_scores(first, second).tolist(), strict=True):
            row.similarity = score
            row.match = None if threshold is None else score > threshold
    for row in rows:
        bad = [path for path in (row.first, row.second) if path in problems]
        if bad:
            row.problem = "; ".join(f"{display_path(path)}: {problems[path]}" for path in bad)
    if not good:
        reasons = "; ".join(row.problem or "" for row in rows[:3])
        raise InputError(f"no pair could be compared: {reasons}")
    return Comparisons(
        rows=rows,
        threshold=threshold,
        source=source,
        calibration=calibration if source == "checkpoint" else None,
        checkpoint=str(checkpoint),
        problems=[row for row in rows if row.problem is not None],
    )
