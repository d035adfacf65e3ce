"""Splits are deterministic, disjoint, stable when files are added, and keep groups together."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import write_pairs
from lightning_siamese.data.pairs import Pair, discover_pairs
from lightning_siamese.data.splits import assign_splits, check_fractions, read_split, write_split


def fake_pairs(count: int, group_size: int = 1) -> list[Pair]:
    return [
        Pair(f"p{i}", Path(f"l{i}"), Path(f"r{i}"), f"g{i // group_size}") for i in range(count)
    ]


def names(splits: dict[str, list[Pair]]) -> dict[str, set[str]]:
    return {split: {pair.name for pair in pairs} for split, pairs in splits.items()}


def test_deterministic_disjoint_and_complete() -> None:
    pairs = fake_pairs(2000)
    first = names(assign_splits(pairs, (0.8, 0.1, 0.1), seed=3))
    assert first == names(assign_splits(list(reversed(pairs)), (0.8, 0.1, 0.1), seed=3))
    assert first["train"].isdisjoint(first["val"]) and first["val"].isdisjoint(first["test"])
    assert first["train"] | first["val"] | first["test"] == {pair.name for pair in pairs}
    assert 1500 < len(first["train"]) < 1700 and 150 < len(first["test"]) < 250
    assert first != names(assign_splits(pairs, (0.8, 0.1, 0.1), seed=4))


def test_adding_files_never_moves_existing_pairs(tmp_path: Path) -> None:
    write_pairs(tmp_path, 30)
    before = names(assign_splits(discover_pairs(tmp_path).pairs, seed=0))
    write_pairs(tmp_path, 30, start=30)
    after = names(assign_splits(discover_pairs(tmp_path).pairs, seed=0))
    for split in before:
        assert before[split] <= after[split]


def test_a_group_stays_in_one_split() -> None:
    splits = assign_splits(fake_pairs(600, group_size=6), (0.5, 0.25, 0.25), seed=0)
    for pairs in splits.values():
        for other in splits.values():
            if other is not pairs:
                assert {p.group for p in pairs}.isdisjoint({p.group for p in other})


@pytest.mark.parametrize(
    "fractions", [(0.8, 0.1), (0.8, 0.3, 0.1), (0.0, 0.5, 0.5), (1.1, -0.05, -0.05)]
)
def test_bad_fractions_are_refused(fractions: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="split_fractions"):
        check_fractions(fractions)


def test_split_file_round_trip_and_fixed_assignments(tmp_path: Path) -> None:
    pairs = fake_pairs(100)
    splits = assign_splits(pairs, seed=0)
    write_split(tmp_path / "split.csv", splits)
    fixed = read_split(tmp_path / "split.csv")
    assert names(assign_splits(pairs, seed=99, fixed=fixed)) == names(splits)
    moved = dict(fixed, p0="test")
    assert "p0" in names(assign_splits(pairs, seed=0, fixed=moved))["test"]


def hash_split(pairs: list[Pair], fractions: tuple[float, float, float], seed: int) -> dict:
    """The plain hash rule, written out here: sha256 of "seed NUL group" as a number in [0, 1)."""
    import hashlib

    result: dict[str, set[str]] = {"train": set(), "val": set(), "test": set()}
    for pair in pairs:
        digest = hashlib.sha256(f"{seed}\x00{pair.group}".encode()).digest()
        position = int.from_bytes(digest[:8], "big") / 2**64
        edge = fractions[0] + fractions[1]
        split = "train" if position < fractions[0] else "val" if position < edge else "test"
        result[split].add(pair.name)
    return result


@pytest.mark.parametrize("group_size", [1, 3])
def test_small_folders_give_every_split_two_pairs(group_size: int) -> None:
    for count in range(6 * group_size, 40 * group_size, group_size):
        for seed in range(10):
            pairs = fake_pairs(count, group_size)
            found = names(assign_splits(pairs, seed=seed))
            assert {split: len(found[split]) >= 2 for split in found} == dict.fromkeys(
                ("train", "val", "test"), True
            ), (count, seed)
            assert found == names(assign_splits(list(reversed(pairs)), seed=seed))
            assert set().union(*found.values()) == {pair.name for pair in pairs}
            assert sum(len(names) for names in found.values()) == count
            # Groups are never torn apart by the moves.
            for split, members in found.items():
                groups = {pair.group for pair in pairs if pair.name in members}
                assert all(pair.name in members for pair in pairs if pair.group in groups), split


def test_a_large_folder_is_split_by_the_hash_alone() -> None:
    pairs = fake_pairs(2000, group_size=2)
    for seed in range(3):
        assert names(assign_splits(pairs, seed=seed)) == hash_split(pairs, (0.8, 0.1, 0.1), seed)


def test_too_few_pairs_and_fixed_pairs_are_not_moved() -> None:
    for seed in range(5):  # three pairs cannot give three splits two each: nothing is lost
        found = names(assign_splits(fake_pairs(3), seed=seed))
        assert set().union(*found.values()) == {"p0", "p1", "p2"}
    pairs = fake_pairs(10)
    everything_in_train = {pair.name: "train" for pair in pairs}
    assert names(assign_splits(pairs, seed=0, fixed=everything_in_train))["train"] == {
        pair.name for pair in pairs
    }
    assert names(assign_splits(pairs, (1.0, 0.0, 0.0), seed=0))["train"] == {
        pair.name for pair in pairs
    }


def test_a_split_file_names_pairs_in_any_unicode_form(tmp_path: Path) -> None:
    import unicodedata

    composed = unicodedata.normalize("NFC", "café")
    pairs = [Pair(composed, Path("l"), Path("r"), composed), *fake_pairs(30)]
    path = tmp_path / "split.csv"
    decomposed = unicodedata.normalize("NFD", "café")
    path.write_text(f"name,group,split\n{decomposed},x,test\n", encoding="utf-8")
    assert composed in names(assign_splits(pairs, seed=0, fixed=read_split(path)))["test"]


def test_split_file_keeps_groups_and_new_group_mates_join_them(tmp_path: Path) -> None:
    pairs = fake_pairs(60, group_size=3)
    splits = assign_splits(pairs, (0.5, 0.25, 0.25), seed=0)
    write_split(tmp_path / "split.csv", splits)
    fixed = read_split(tmp_path / "split.csv")
    rows = (tmp_path / "split.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0] == "name,group,split" and len(rows) == 61
    where = {pair.group: split for split, members in splits.items() for pair in members}
    assert fixed.groups == where
    # New members of every group, placed by a seed under which most groups hash elsewhere:
    # each joins its group's split.
    newcomers = [Pair(f"new{i}", Path(), Path(), pair.group) for i, pair in enumerate(pairs[::3])]
    placed = assign_splits(pairs + newcomers, (0.5, 0.25, 0.25), 7, fixed, fixed.groups)
    for split, members in placed.items():
        assert all(where[pair.group] == split for pair in members)
    moved = assign_splits(newcomers, (0.5, 0.25, 0.25), seed=7)  # without the file they scatter
    assert any(where[p.group] != s for s, members in moved.items() for p in members)


def test_a_split_file_never_leaks_a_group_or_loses_a_pair(tmp_path: Path) -> None:
    """What a split file cannot do: put a group's pairs in two splits (a pair moved into
    another group in pairs.csv, a name listed in two splits), name no pair of the folder, or
    forget the split of a pair missing for a while; a spreadsheet's byte order mark is read."""
    from lightning_siamese.data.run_split import split_pairs
    from lightning_siamese.errors import PairDataError

    pairs = fake_pairs(60, group_size=3)
    path = tmp_path / "split.csv"
    splits, absent = split_pairs(pairs, (0.5, 0.25, 0.25), 0)
    write_split(path, splits, absent)
    in_train, in_test = splits["train"][0], splits["test"][0]
    # pairs.csv now puts a training pair in a test group: refused, not leaked.
    regrouped = [
        Pair(p.name, p.left, p.right, in_test.group) if p == in_train else p for p in pairs
    ]
    with pytest.raises(PairDataError, match="would have pairs in two splits"):
        split_pairs(regrouped, (0.5, 0.25, 0.25), 0, path)
    # A pair missing at one run keeps its split in the run's file, and returns to it.
    split_file, kept = split_pairs([p for p in pairs if p != in_test], (0.5, 0.25, 0.25), 0, path)
    assert kept == {in_test.name: (in_test.group, "test")}
    write_split(path, split_file, kept)
    assert in_test in split_pairs(pairs, (0.5, 0.25, 0.25), 0, path)[0]["test"]
    # Listed twice, naming no pair, empty: refused; a byte order mark: read.
    text = path.read_text(encoding="utf-8")
    path.write_text(text + f"{in_train.name},{in_train.group},val\n", encoding="utf-8")
    with pytest.raises(PairDataError, match="listed in two splits"):
        read_split(path)
    path.write_text("name,split\nsomeone-else,train\n", encoding="utf-8")
    with pytest.raises(PairDataError, match="names none of the 60 pairs"):
        split_pairs(pairs, (0.5, 0.25, 0.25), 0, path)
    path.write_text("name,split\n", encoding="utf-8")
    with pytest.raises(PairDataError, match="lists no pair"):
        read_split(path)
    path.write_text("\ufeff" + text, encoding="utf-8")
    assert read_split(path) == read_split_text(text, tmp_path)


def read_split_text(text: str, folder: Path) -> dict[str, str]:
    path = folder / "plain.csv"
    path.write_text(text, encoding="utf-8")
    return dict(read_split(path))
