"""``pairs.csv``: the optional ``name,group`` file of a pair folder, read as spreadsheet programs
save it, and written by the demo builders."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

from lightning_siamese.data.folders import IMAGE_EXTENSIONS
from lightning_siamese.files import display_path, name_key

PAIRS_CSV = "pairs.csv"


def read_groups(root: Path, known: set[str]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """``name`` (or ``file``, a file name whose image extension is dropped) -> ``group`` from
    ``pairs.csv``, as spreadsheet programs save it: a byte order mark, CRLF line ends, quoted
    fields, headers in any case, extra columns. Rows that name no file of ``known`` (pair
    names, usable or not) are reported: the groups, and ``(path, reason)`` of each problem."""
    path = root / PAIRS_CSV
    if not path.is_file():
        return {}, []
    groups: dict[str, str] = {}
    problems: list[tuple[str, str]] = []
    unknown: list[str] = []
    conflicts: set[str] = set()
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = {(column or "").strip().lower(): column for column in reader.fieldnames or []}
            name_column = columns.get("name") or columns.get("file")
            group_column = columns.get("group")
            if name_column is None or group_column is None:
                reason = (
                    "needs a column 'name' (or 'file') and a column 'group', has "
                    f"{sorted(columns)}; groups are ignored until it is fixed"
                )
                return {}, [(display_path(path), reason)]
            for row in reader:
                name, group = (row.get(name_column) or "").strip(), (row.get(group_column) or "")
                if Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                    name = Path(name).stem
                name = name_key(name)
                if name and group.strip():
                    group = name_key(group.strip())
                    if groups.get(name, group) != group:
                        conflicts.add(name)
                    groups[name] = group
                    if name not in known:
                        unknown.append(name)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        problems.append((display_path(path), f"unreadable ({error}); groups are ignored"))
        return {}, problems  # a part read is not the file: none of its groups is used
    if conflicts:
        listed = ", ".join(repr(display_path(name)) for name in sorted(conflicts)[:5])
        more = f" and {len(conflicts) - 5} more" if len(conflicts) > 5 else ""
        reason = (
            f"{len(conflicts)} name(s) listed twice with different groups ({listed}{more}): "
            "they are left without a group (each its own); keep one row each"
        )
        problems.append((display_path(path), reason))
        groups = {name: group for name, group in groups.items() if name not in conflicts}
    if unknown:
        listed = ", ".join(repr(display_path(name)) for name in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        reason = (
            f"{len(unknown)} row(s) name no file in left/ or right/ ({listed}{more}): "
            "their groups are unused; fix the names or remove the rows"
        )
        problems.append((display_path(path), reason))
    return groups, problems


def write_pairs_csv(path: Path, rows: Iterable[dict[str, str]], columns: list[str]) -> None:
    """Write a ``pairs.csv`` (at least ``name`` and ``group``)."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
