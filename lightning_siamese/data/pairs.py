"""Pair discovery: a file in ``left/`` pairs with the file of the same stem in ``right/``.

Every problem in a folder is collected into one report instead of failing on the first, so a user
fixes a scraped folder in one pass. Unusable files are skipped, never silently.

Symbolic links to files are followed (the target may lie outside the folder); links to folders are
reported like folders, and broken links, link loops and a pair whose two sides are one file are
reported and skipped.
"""

from __future__ import annotations

import json
import os
import warnings
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from lightning_siamese.data.folders import IMAGE_EXTENSIONS, EntryKind, examine
from lightning_siamese.data.images import check_image
from lightning_siamese.data.pairs_csv import read_groups
from lightning_siamese.errors import PairDataError
from lightning_siamese.files import CACHE_FOLDER, display_path, name_key

SIDES = ("left", "right")


@dataclass(frozen=True)
class Pair:
    """A look-alike pair: ``left`` and ``right`` share the stem ``name``; ``group`` keeps
    near-duplicate pairs (e.g. variants of one emoji) together in one split."""

    name: str
    left: Path
    right: Path
    group: str


@dataclass(frozen=True)
class Problem:
    """A file (or folder) that is not used, with the reason and what to do about it."""

    path: str
    reason: str


@dataclass
class PairReport:
    """What pair discovery found in a folder."""

    root: Path
    pairs: list[Pair] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    files_seen: int = 0

    @property
    def skipped_files(self) -> int:
        """Files under left/ and right/ that are not part of a usable pair."""
        return self.files_seen - 2 * len(self.pairs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": display_path(self.root),
            "pairs": len(self.pairs),
            "groups": len({pair.group for pair in self.pairs}),
            "files_seen": self.files_seen,
            "skipped_files": self.skipped_files,
            "problems": [asdict(problem) for problem in self.problems],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def summary(self) -> str:
        """One line: pairs used, files skipped."""
        groups = len({pair.group for pair in self.pairs})
        return (
            f"{display_path(self.root)}: {len(self.pairs)} pairs ({groups} groups) from "
            f"{self.files_seen} files; {self.skipped_files} files skipped, "
            f"{len(self.problems)} problems"
        )

    def format(self, limit: int | None = None) -> str:
        """The summary, then one line per problem (``limit`` caps the list)."""
        lines = [self.summary()]
        shown = self.problems if limit is None else self.problems[:limit]
        lines += [f"  {problem.path}: {problem.reason}" for problem in shown]
        if len(shown) < len(self.problems):
            hidden = len(self.problems) - len(shown)
            lines.append(
                f"  ... and {hidden} more "
                f"(run `lightning-siamese data check {display_path(self.root)}`)"
            )
        return "\n".join(lines)


#: What every command says when a folder has no usable pair.
NO_PAIR = (
    "no usable pair found: left/ and right/ need images with the same file stem "
    "(left/cat.jpg pairs with right/cat.png)"
)


def _list_side(
    root: Path, side: str, problems: list[Problem], unusable: dict[str, Path]
) -> tuple[dict[str, Path], int]:
    """Image files of one side by stem; everything unusable goes to ``problems``, and also to
    ``unusable`` by stem, so a twin on the other side can say why it is not used."""
    folder = root / side
    by_stem: dict[str, list[Path]] = defaultdict(list)
    seen = 0
    try:
        entries = sorted(folder.iterdir())
    except OSError as error:
        raise PairDataError(f"{display_path(folder)}: cannot read the folder ({error})") from error
    for entry in entries:
        if entry.name == CACHE_FOLDER:  # search's cache of these images: the package's own
            continue
        seen += 1
        shown = display_path(entry)
        kind, reason = examine(entry)
        if kind is EntryKind.HIDDEN:
            problems.append(Problem(shown, "hidden file, ignored (rename it to use it)"))
        elif kind is EntryKind.UNUSABLE:
            problems.append(Problem(shown, str(reason)))
            unusable[name_key(entry.stem)] = entry
        elif kind is EntryKind.FOLDER:
            unusable[name_key(entry.name)] = entry
            problems.append(
                Problem(
                    shown,
                    "folder, ignored: images are read from the top level of left/ "
                    "and right/; move its images up if they are pairs",
                )
            )
        elif kind is EntryKind.OTHER:
            kinds = ", ".join(sorted(IMAGE_EXTENSIONS))
            unusable[name_key(entry.stem)] = entry
            problems.append(
                Problem(
                    shown,
                    f"not an image file (expected one of {kinds}): convert it or "
                    "move it out of the folder",
                )
            )
        else:
            by_stem[name_key(entry.stem)].append(entry)
    unique: dict[str, Path] = {}
    for stem, paths in by_stem.items():
        if len(paths) == 1:
            unique[stem] = paths[0]
            continue
        names = ", ".join(path.name for path in paths)
        for path in paths:
            reason = f"{len(paths)} files share the stem '{stem}' ({names}): keep one"
            unusable[stem] = path
            problems.append(Problem(display_path(path), reason))
    return unique, seen


def check_layout(root: str | Path) -> None:
    """Raise :class:`PairDataError` unless ``root`` has a ``left/`` and a ``right/`` folder."""
    root = Path(root)
    missing = [f"{side}/" for side in SIDES if not (root / side).is_dir()]
    if root.is_dir() and not missing:
        return
    if root.is_dir():
        what = f"{root} has no {' or '.join(missing)}"
    else:
        what = f"{root} is a file, not a folder" if root.exists() else f"{root} does not exist"
    raise PairDataError(
        f"{what}: expected {root}/left and {root}/right holding look-alike images with the "
        "same file stem (left/cat.jpg pairs with right/cat.png)"
    )


def discover_pairs(root: str | Path, check_images: bool = True, workers: int = 8) -> PairReport:
    """Find the pairs in ``root/left`` and ``root/right`` and every problem on the way.

    Args:
        root: a folder with ``left/`` and ``right/`` and, optionally, ``pairs.csv`` (columns
            ``name`` and ``group``: pairs of one group always land in the same split).
        check_images: decode every image once, so unreadable files are reported now.
        workers: threads for the decoding check (Pillow releases the GIL while decoding).

    Raises:
        PairDataError: ``root``, ``left/`` or ``right/`` is missing.
    """
    root = Path(root)
    check_layout(root)
    report = PairReport(root)
    problems: list[Problem] = []
    unusable: dict[str, dict[str, Path]] = {side: {} for side in SIDES}
    left, seen_left = _list_side(root, "left", problems, unusable["left"])
    right, seen_right = _list_side(root, "right", problems, unusable["right"])
    report.files_seen = seen_left + seen_right
    for stems, side, other in ((left, "left", right), (right, "right", left)):
        other_side = "right" if side == "left" else "left"
        for stem in sorted(stems.keys() - other.keys()):
            if stem in unusable[other_side]:
                twin_name = display_path(unusable[other_side][stem].relative_to(root))
                reason = f"its twin {twin_name} is unusable (see above); this pair is skipped"
            else:
                reason = (
                    f"no twin in {other_side}/ (a file named '{stem}.*'): add it or remove this"
                )
            problems.append(Problem(display_path(stems[stem]), reason))

    candidates = []
    for stem in sorted(left.keys() & right.keys()):
        if os.path.samefile(left[stem], right[stem]):
            for path in (left[stem], right[stem]):
                problems.append(
                    Problem(
                        display_path(path),
                        f"left/ and right/ '{stem}' are one and the same file (a symbolic or "
                        "hard link): a pair needs two different images; replace one side",
                    )
                )
        else:
            candidates.append(stem)
    if check_images:
        files = [path for stem in candidates for path in (left[stem], right[stem])]
        # Pillow warns, without the file name, on opening an image over its pixel limit; the
        # check reports that file itself, by name, as a problem.
        with warnings.catch_warnings(), ThreadPoolExecutor(max(1, workers)) as pool:
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            reasons = dict(zip(files, pool.map(check_image, files), strict=True))
        bad = {path for path, reason in reasons.items() if reason}
        for stem in candidates:
            for path, twin in ((left[stem], right[stem]), (right[stem], left[stem])):
                if path in bad:
                    problems.append(Problem(display_path(path), str(reasons[path])))
                elif twin in bad:
                    twin_name = display_path(twin.relative_to(root))
                    reason = f"its twin {twin_name} is unusable (see above); this pair is skipped"
                    problems.append(Problem(display_path(path), reason))
        candidates = [stem for stem in candidates if not {left[stem], right[stem]} & bad]

    known = left.keys() | right.keys() | unusable["left"].keys() | unusable["right"].keys()
    groups, csv_problems = read_groups(root, known)
    problems += [Problem(path, reason) for path, reason in csv_problems]
    report.pairs = [
        Pair(stem, left[stem], right[stem], groups.get(stem, stem)) for stem in candidates
    ]
    report.problems = problems
    return report


def require_pairs(report: PairReport, strict: bool = False) -> list[Pair]:
    """The usable pairs, or an error that lists every problem (always, when ``strict``)."""
    if not report.pairs:
        raise PairDataError(f"{NO_PAIR}.\n{report.format()}")
    if strict and report.problems:
        raise PairDataError("strict mode: the folder has problems.\n" + report.format())
    return report.pairs
