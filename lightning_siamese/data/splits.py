"""Deterministic pair-level train/val/test splits.

A group (a pair's name, or its ``group`` from ``pairs.csv``) goes to a split by a hash of the seed
and the group name alone. So the split of a pair never depends on which other files are in the
folder: adding images never moves existing pairs between splits, and near-duplicate pairs of one
group never straddle two splits.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections.abc import Sequence
from pathlib import Path

from lightning_siamese.data.pairs import Pair, name_key
from lightning_siamese.errors import ConfigError, MissingFileError, PairDataError
from lightning_siamese.files import atomic_write, display_path

SPLITS = ("train", "val", "test")
#: The fewest pairs a split needs: retrieval and negatives need two.
MIN_PAIRS = 2
SPLIT_FILE = "split.csv"


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Validate (train, val, test) fractions: three values >= 0 summing to 1, train > 0."""
    if len(fractions) != 3:
        raise ConfigError(
            f"split_fractions needs 3 values (train, val, test), got {list(fractions)}"
        )
    train, val, test = (float(value) for value in fractions)
    finite = all(math.isfinite(value) for value in (train, val, test))
    if not finite or min(train, val, test) < 0 or train <= 0 or abs(train + val + test - 1) > 1e-6:
        raise ConfigError(
            f"split_fractions must be >= 0, with train > 0, and sum to 1; got {list(fractions)} "
            f"(sum {train + val + test:g})"
        )
    return train, val, test


def group_position(group: str, seed: int) -> float:
    """A uniform number in [0, 1) fixed by the seed and the group name alone."""
    digest = hashlib.sha256(f"{seed}\x00{group}".encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_splits(
    pairs: Sequence[Pair],
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    fixed: dict[str, str] | None = None,
    fixed_groups: dict[str, str] | None = None,
) -> dict[str, list[Pair]]:
    """Split pairs by group: each group goes where the hash of the seed and its name falls.

    Then a split with a non-zero share but fewer than :data:`MIN_PAIRS` pairs (a small folder)
    takes whole groups from the training split, those whose hash positions lie nearest to its
    own range first, as long as training keeps :data:`MIN_PAIRS` pairs. In a folder large
    enough that every split holds :data:`MIN_PAIRS` pairs by hash alone nothing moves, so adding
    files never moves a pair there; the result always depends on the pairs and the seed alone.

    Args:
        fractions: expected shares of (train, val, test) groups; on small folders the realised
            shares scatter around them, as with any split that must stay stable.
        fixed: pair name -> split, e.g. read back from a run's ``split.csv``; pairs listed there
            keep that split (and are never moved), other pairs are placed by their hash.
        fixed_groups: group -> split (:attr:`SplitFile.groups`): a pair not in ``fixed`` whose
            group is listed joins its group's split, so group-mates stay together.
    """
    shares = check_fractions(fractions)
    fixed = fixed or {}
    fixed_groups = fixed_groups or {}
    lower = {"train": 0.0, "val": shares[0], "test": shares[0] + shares[1]}
    upper = {"train": shares[0], "val": shares[0] + shares[1], "test": 1.0}
    result: dict[str, list[Pair]] = {split: [] for split in SPLITS}
    for pair in pairs:
        split = fixed.get(pair.name) or fixed_groups.get(pair.group)
        if split is None:
            position = group_position(pair.group, seed)
            split = (
                "train"
                if position < upper["train"]
                else "val"
                if position < upper["val"]
                else "test"
            )
        result[split].append(pair)
    for split, share in zip(("val", "test"), shares[1:], strict=True):
        while share > 0 and len(result[split]) < MIN_PAIRS:
            movable: dict[str, list[Pair]] = {}
            for pair in result["train"]:
                movable.setdefault(pair.group, []).append(pair)
            pinned = {pair.group for pair in result["train"] if pair.name in fixed}
            pinned |= fixed_groups.keys()
            room = len(result["train"]) - MIN_PAIRS
            candidates = [g for g in movable if g not in pinned and len(movable[g]) <= room]
            if not candidates:
                break

            def distance(group: str, split: str = split) -> tuple[float, str]:
                position = group_position(group, seed)
                gap = max(lower[split] - position, position - upper[split], 0.0)
                return gap, group

            group = min(candidates, key=distance)
            result["train"] = [pair for pair in result["train"] if pair.group != group]
            result[split] += movable[group]
    check_groups_apart(result)
    return result


def check_groups_apart(splits: dict[str, list[Pair]], shown: int = 3) -> None:
    """A :class:`PairDataError` when a group has pairs in two splits: a split file (or a run's
    ``split.csv``) that keeps pairs where they were, against a ``pairs.csv`` that puts them in
    one group, would leak a group's look-alikes from training into evaluation."""
    where: dict[str, dict[str, str]] = {}
    for split, pairs in splits.items():
        for pair in pairs:
            where.setdefault(pair.group, {}).setdefault(split, pair.name)
    spread = {group: found for group, found in where.items() if len(found) > 1}
    if spread:
        listed = "; ".join(
            f"group {display_path(group)!r}: "
            + ", ".join(f"{display_path(name)} in {split}" for split, name in found.items())
            for group, found in sorted(spread.items())[:shown]
        )
        more = f" and {len(spread) - shown} more" if len(spread) > shown else ""
        raise PairDataError(
            f"{len(spread)} group(s) would have pairs in two splits ({listed}{more}): the split "
            "file keeps each pair it lists in its split, and pairs.csv puts these pairs in one "
            "group. Fix the group in pairs.csv or the pair's split in the split file"
        )


def write_split(
    path: Path, splits: dict[str, list[Pair]], absent: dict[str, tuple[str, str]] | None = None
) -> None:
    """Write ``name,group,split`` rows, sorted by name, so a later run can reuse the split;
    ``absent`` (name -> (group, split)) keeps the rows of pairs missing for now, so that a pair
    that comes back returns to its split."""
    present = {pair.name for pairs in splits.values() for pair in pairs}
    kept = [(n, g, split) for n, (g, split) in (absent or {}).items() if n not in present]
    rows = sorted(
        [(pair.name, pair.group, split) for split, pairs in splits.items() for pair in pairs] + kept
    )
    with atomic_write(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "group", "split"])
        writer.writerows(rows)


class SplitFile(dict[str, str]):
    """What :func:`read_split` returns: pair name -> split, in :attr:`groups` each group
    of the file whose pairs all lie in one split -> that split, and in :attr:`rows` each name
    -> (its group, its split)."""

    groups: dict[str, str]
    rows: dict[str, tuple[str, str]]


def read_split(path: Path) -> SplitFile:
    """Pair name -> split from a ``split.csv`` written by :func:`write_split` (its ``groups``
    from the ``group`` column, when the file has one)."""
    if not path.exists():
        raise MissingFileError(f"split file {path} does not exist: pass a split.csv that fit wrote")
    try:  # utf-8-sig: a file saved by a spreadsheet starts with a byte order mark
        with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as error:  # a folder, no permission
        raise PairDataError(f"split file {path}: cannot read it ({error})") from error
    if rows and not {"name", "split"} <= rows[0].keys():
        raise PairDataError(f"{path}: a split file needs the columns 'name' and 'split'")
    unknown = {row["split"] for row in rows} - set(SPLITS)
    if unknown:
        raise PairDataError(f"{path}: unknown split names {sorted(unknown)}; expected {SPLITS}")
    if not rows:
        raise PairDataError(f"{path}: the split file lists no pair")
    # Names as pair discovery keys them (NFC), also for a file written by hand or by an older
    # version from names in another Unicode form.
    splits_of_name: dict[str, set[str]] = {}
    for row in rows:
        splits_of_name.setdefault(name_key(row["name"]), set()).add(row["split"])
    twice = sorted(name for name, found in splits_of_name.items() if len(found) > 1)
    if twice:
        raise PairDataError(
            f"{path}: {len(twice)} pair(s) listed in two splits "
            f"({', '.join(repr(display_path(n)) for n in twice[:3])}); keep one row each"
        )
    result = SplitFile({name_key(row["name"]): row["split"] for row in rows})
    result.rows = {
        name_key(row["name"]): (name_key(row.get("group") or row["name"]), row["split"])
        for row in rows
    }
    splits_of: dict[str, set[str]] = {}
    for row in rows:
        if row.get("group"):
            splits_of.setdefault(name_key(row["group"]), set()).add(row["split"])
    result.groups = {group: next(iter(s)) for group, s in splits_of.items() if len(s) == 1}
    return result
