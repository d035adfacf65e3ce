"""A run's data and split, checked: the settings and the data folder before anything is built (a
demo set built where asked), the image size the data and the model agree on, the share each
stage needs, a resume that would move pairs between splits; the split from hashes or a
``split.csv``, written for the run, and the triplet datasets of the splits."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning_siamese.data.negatives import draw_negatives, negative_groups
from lightning_siamese.data.pairs import Pair, PairDataError, check_layout
from lightning_siamese.data.splits import (
    MIN_PAIRS,
    assign_splits,
    check_fractions,
    read_split,
    write_split,
)
from lightning_siamese.data.transforms import Transform
from lightning_siamese.data.triplets import TripletDataset
from lightning_siamese.data.views import AugmentViews
from lightning_siamese.errors import ConfigError


def check_settings(
    split_fractions: Sequence[float], image_size: int | None, batch_size: int, num_workers: int
) -> None:
    """A :class:`ConfigError` for fractions that do not split, or sizes out of range."""
    check_fractions(split_fractions)
    if (image_size is not None and image_size < 1) or batch_size < 1 or num_workers < 0:
        raise ConfigError(
            "image_size and batch_size must be >= 1 and num_workers >= 0; got "
            f"{image_size}, {batch_size}, {num_workers}"
        )


def build_demo_data(kind: str, root: Path) -> None:
    """Build the ``emoji`` or ``glyphs`` demo set into ``root``."""
    if kind == "emoji":
        from lightning_siamese.data.emoji import build_emoji  # npm: only when asked

        build_emoji(root)
    else:
        from lightning_siamese.data.glyphs import build_glyphs

        build_glyphs(root)


def agreed_image_size(given: int | None, model_size: int | None) -> int:
    """The image size of the data: ``given``, or the model's (the model decides it:
    :func:`~lightning_siamese.models.backbones.resolve_image_size`); a :class:`ConfigError`
    when both are set and differ, or neither is."""
    if given is not None and model_size is not None and given != model_size:
        raise ConfigError(
            f"the data are {given} px, the model takes {model_size} px: give SiameseDataModule "
            f"image_size={model_size}, or leave it unset to follow the model"
        )
    size = given if given is not None else model_size
    if size is None:
        raise ConfigError("SiameseDataModule needs image_size when no model gives one")
    return int(size)


def check_root(root: str | None, build_if_missing: str | None, predict_root: str | None) -> None:
    """Fail now, with what to do, when the data folder is missing and nothing will build it."""
    if build_if_missing is not None or predict_root is not None:
        return
    if not Path(str(root)).exists():
        raise PairDataError(
            f"data root {root} does not exist: pass --data.root a folder with left/ and right/ "
            "(or --data.build_if_missing emoji|glyphs to build a demo set there)"
        )
    check_layout(str(root))


#: How a message names what needs a split.
STAGE_WORDS = {
    ("fit", "train"): "training",
    ("fit", "val"): "validation during fit",
    ("validate", "val"): "validate",
    ("test", "test"): "test",
}


def require_split(
    splits: dict[str, list[Pair]], split: str, stage: Any, fractions: Sequence[float]
) -> None:
    """A :class:`ConfigError` that says what to do when ``split`` holds fewer than
    :data:`MIN_PAIRS` pairs for ``stage``."""
    count = len(splits[split])
    if count < MIN_PAIRS:
        stage = str(getattr(stage, "value", stage))  # Lightning passes a str enum
        what = STAGE_WORDS.get((stage, split), stage)
        raise ConfigError(
            f"the {split} split has {count} pair(s) but {what} needs at least {MIN_PAIRS}: "
            f"add pairs or raise its share in --data.split_fractions (now {list(fractions)})"
        )


def require_stage(
    splits: dict[str, list[Pair]], stage: Any, fractions: Sequence[float], batch_size: int
) -> None:
    """:func:`require_split` for every split ``stage`` uses, and for ``fit`` a train split of
    at least ``batch_size`` pairs."""
    needed = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}
    for split in needed.get(stage or "fit", ()):
        require_split(splits, split, stage, fractions)
    if stage == "fit" and len(splits["train"]) < batch_size:
        raise ConfigError(
            f"batch_size ({batch_size}) is larger than the train split "
            f"({len(splits['train'])} pairs): lower --data.batch_size"
        )


def check_resume(ours: dict[str, Any], theirs: dict[str, Any], checkpoint: Any) -> None:
    """A :class:`ConfigError` when the run ``checkpoint`` comes from (``theirs``: its data
    module's state or data hyper-parameters) was split with another ``seed`` or other
    ``split_fractions`` than ``ours``: its pairs would move between train, val and test."""
    for key in ("seed", "split_fractions"):
        mine, other = ours.get(key), theirs.get(key)
        if key == "split_fractions" and other is not None:
            mine, other = list(mine or ()), list(other)
        if other is not None and mine != other:
            raise ConfigError(
                f"--data.{key} {mine} is not the {other} of the run that {checkpoint} "
                f"resumes: its pairs would move between train, val and test. Resume with "
                f"--data.{key} {other} (or without the option), or start a new run: another "
                "--trainer.default_root_dir, without --ckpt_path"
            )
    views = ours.get("augment_views"), theirs.get("augment_views", ours.get("augment_views"))
    if views[0] != views[1]:
        warnings.warn(
            f"--data.augment_views {views[0]} is not the {views[1]} of the run that "
            f"{checkpoint} resumes: the rest of the fit is augmented otherwise than the run "
            "would have been",
            stacklevel=2,
        )


def split_pairs(
    pairs: Sequence[Pair], fractions: Sequence[float], seed: int, split_file: Path | None = None
) -> tuple[dict[str, list[Pair]], dict[str, tuple[str, str]]]:
    """The pairs by split: by their groups' hashes (:func:`assign_splits`), those listed in
    ``split_file`` (a ``split.csv``) in its split, new pairs of its groups with their group;
    and the rows of ``split_file`` whose pairs are missing now (name -> (group, split)), to
    keep in the run's ``split.csv`` so that a pair that comes back returns to its split.

    Raises:
        PairDataError: ``split_file`` names none of the pairs, lists a pair twice, or puts a
            group's pairs in two splits.
    """
    fixed = read_split(split_file) if split_file else None
    if fixed is None:
        return assign_splits(pairs, fractions, seed), {}
    present = {pair.name for pair in pairs}
    if pairs and not present & fixed.keys():
        raise PairDataError(
            f"{split_file} names none of the {len(present)} pairs of this folder: is it the "
            "split of another data set?"
        )
    absent = {name: row for name, row in fixed.rows.items() if name not in present}
    return assign_splits(pairs, fractions, seed, fixed, fixed.groups), absent


def write_run_split(
    path: Path, splits: dict[str, list[Pair]], absent: dict[str, tuple[str, str]] | None = None
) -> None:
    """Write the run's ``split.csv`` (with the ``absent`` rows: :func:`split_pairs`); a
    :class:`ConfigError` when the folder is not writable."""
    try:
        write_split(path, splits, absent)
    except OSError as error:
        raise ConfigError(
            f"cannot write {path} ({error}): pass --trainer.default_root_dir a folder you can "
            "write to"
        ) from error


def triplet_datasets(
    splits: dict[str, list[Pair]],
    evaluation: Transform,
    training: Transform,
    seed: int,
    group_mates_as_negatives: bool = False,
    augment_views: int | None = None,
) -> dict[str, TripletDataset]:
    """A :class:`TripletDataset` per split: training's negatives drawn by its sampler each
    epoch (with ``augment_views``, its images' fixed views drawn from ``seed``), the other
    splits' fixed by ``seed`` (none where a split holds one group)."""
    datasets = {}
    for split, pairs in splits.items():
        if split == "train":
            views = AugmentViews(2 * len(pairs), augment_views, seed) if augment_views else None
            datasets[split] = TripletDataset(
                pairs, training, group_mates_as_negatives=group_mates_as_negatives, views=views
            )
            continue
        groups = negative_groups(pairs, group_mates_as_negatives)
        negatives = draw_negatives(groups, f"{split}:{seed}") if len(groups) > 1 else []
        datasets[split] = TripletDataset(
            pairs, evaluation, negatives, group_mates_as_negatives=group_mates_as_negatives
        )
    return datasets
