"""Triplets from pairs: anchor = left, positive = its right twin, negative = another pair's image.

Images of a split are numbered ``2 * pair + side`` (side 0 = left, 1 = right). A negative is an
image of a *different* pair of the same split, and of a different group where the split has one,
so near-duplicate variants never serve as negatives of each other.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, cast

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from lightning_siamese.errors import ConfigError
from lightning_siamese.data.images import load_image
from lightning_siamese.data.pairs import Pair
from lightning_siamese.data.transforms import Transform


class UnreadableImageWarning(UserWarning):
    """An image that read fine at start failed later; its triplet was skipped."""


def draw_negative(
    rng: random.Random, anchor: int, groups: Sequence[str], other_groups: bool | None = None
) -> int:
    """An image index (``2 * pair + side``) of another pair, uniformly, and of another group
    when the split has more than one group (``other_groups``: whether it has, when the caller
    knows; None works it out)."""
    count = len(groups)
    if count < 2:
        raise ValueError("a split needs at least 2 pairs to draw negatives")
    if other_groups is None:
        other_groups = len(set(groups)) > 1
    while True:
        other = rng.randrange(count - 1)
        other += other >= anchor
        if not other_groups or groups[other] != groups[anchor]:
            return 2 * other + rng.randrange(2)


def negative_groups(pairs: Sequence[Pair], group_mates_as_negatives: bool = False) -> list[str]:
    """The groups that rule which images may be a pair's negative: each pair's ``group``, so a
    negative never comes from the anchor's group (its variants look alike on purpose), or with
    ``group_mates_as_negatives`` (or in a split of one group) each pair's own name, so only the
    anchor's own twin is left out."""
    if group_mates_as_negatives or len({pair.group for pair in pairs}) == 1:
        return [pair.name for pair in pairs]  # a split of one group: another pair will do
    return [pair.group for pair in pairs]


def image_path(pairs: Sequence[Pair], image_index: int) -> Path:
    """The file of image ``image_index`` (``2 * pair + side``) of a split's pairs."""
    pair = pairs[image_index // 2]
    return pair.right if image_index % 2 else pair.left


def draw_negatives(groups: Sequence[str], seed: int | str) -> list[int]:
    """One negative per anchor, fixed by ``seed`` (see :func:`draw_negative`)."""
    rng = random.Random(str(seed))
    other_groups = len(set(groups)) > 1
    return [draw_negative(rng, anchor, groups, other_groups) for anchor in range(len(groups))]


def example_triplets(
    pairs: Sequence[Pair], count: int = 4, seed: int = 0
) -> list[tuple[Path, Path, Path]]:
    """``count`` (anchor, positive, negative) files drawn by ``seed``: the pictures of
    ``data show``, the seed's ``visualize()``."""
    negatives = draw_negatives([pair.group for pair in pairs], f"show:{seed}")
    chosen = random.Random(seed).sample(range(len(pairs)), min(count, len(pairs)))
    return [
        (pairs[index].left, pairs[index].right, image_path(pairs, negatives[index]))
        for index in chosen
    ]


class TripletDataset(Dataset):
    """Triplets of one split.

    Indexed by ``i`` (the negative fixed at construction: validation and test), by
    ``(i, negative)``, or by a :class:`TripletKey` (the negative and the augmentation seed
    chosen by :class:`TripletSampler`: training).

    Items are dicts: ``anchor``, ``positive``, ``negative`` (image tensors), ``index`` (the pair),
    ``negative_index`` (the image index of the negative), and ``group`` and ``negative_group``
    (numbers of the anchor's and the negative's group, for in-batch mining to leave group-mates
    out); with ``load_images`` off, the numbers only (no file is read).

    Args:
        pairs: the split's pairs.
        transform: image -> tensor.
        negatives: each pair's fixed negative (image index); None when a sampler draws them.
        group_mates_as_negatives: let an anchor's group-mates be its negatives (see
            :func:`negative_groups`).
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        transform: Transform,
        negatives: Sequence[int] | None = None,
        group_mates_as_negatives: bool = False,
    ) -> None:
        self.pairs = list(pairs)
        self.transform = transform
        self.negatives = list(negatives) if negatives is not None else None
        #: The groups that rule negatives, one per pair, and their numbers.
        self.groups = negative_groups(self.pairs, group_mates_as_negatives)
        numbers: dict[str, int] = {}
        self.group_numbers = [numbers.setdefault(group, len(numbers)) for group in self.groups]
        # False: items carry only the indices (the model has the images' features cached).
        self.load_images = True
        self.unreadable: set[str] = set()

    def image_path(self, image_index: int) -> Path:
        return image_path(self.pairs, image_index)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: int | tuple[int, ...]) -> dict[str, Any]:
        seed = None
        if isinstance(key, tuple):  # (i, negative) or a TripletKey with its augmentation seed
            index, negative, *rest = key
            seed = rest[0] if rest else None
        else:
            if self.negatives is None:
                raise TypeError("this dataset draws negatives in its sampler: index it by (i, j)")
            index, negative = key, self.negatives[key]
        if not self.load_images:
            return self._numbers(index, negative)
        # A file checked at start can go bad later (deleted, truncated, replaced): report it and
        # serve the next triplet whose files still read, instead of ending a long run.
        for step in range(len(self.pairs)):
            candidate = (index + step) % len(self.pairs)
            try:
                return self.load_triplet(
                    candidate, self._negative_for(candidate, negative, step), seed
                )
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
                self._report_unreadable(error)
        raise RuntimeError("no triplet of this split can be read any more: every file failed")

    def load_triplet(
        self,
        index: int,
        negative: int,
        seed: int | None = None,
        read: Callable[[Path], Image.Image] | None = None,
    ) -> dict[str, Any]:
        """The triplet's tensors; with ``seed``, the random transforms draw from torch's
        generator seeded by it alone (the same in any process, worker or resumed run), and the
        process's own random state is put back after. (torchvision's transforms draw from
        torch's generator; a custom transform that uses ``random`` or NumPy is not seeded.)
        ``read`` opens a file (default :func:`~lightning_siamese.data.images.load_image`)."""
        pair = self.pairs[index]
        read = read or load_image
        images = []
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            for path in (pair.left, pair.right, self.image_path(negative)):
                try:
                    images.append(self.transform(read(path)))
                except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
                    raise OSError(f"{path}: {error}") from error
        return {
            "anchor": images[0],
            "positive": images[1],
            "negative": images[2],
            **self._numbers(index, negative),
        }

    def _negative_for(self, anchor: int, negative: int, step: int) -> int:
        """``negative``, or for a replacement anchor (``step`` > 0) the first image from there
        on that is of another group than the anchor's (of another pair when none is)."""
        if step == 0:
            return negative
        count = 2 * len(self.pairs)
        images = [(negative + offset) % count for offset in range(count)]
        other_group = [j for j in images if self.groups[j // 2] != self.groups[anchor]]
        return next(iter(other_group), next(j for j in images if j // 2 != anchor))

    def _numbers(self, index: int, negative: int) -> dict[str, int]:
        return {
            "index": index,
            "negative_index": negative,
            "group": self.group_numbers[index],
            "negative_group": self.group_numbers[negative // 2],
        }

    def _report_unreadable(self, error: BaseException) -> None:
        message = str(error)
        if message not in self.unreadable:  # once per file (per loader process)
            self.unreadable.add(message)
            warnings.warn(
                f"{message}: this image became unreadable after the start check; its "
                "triplet is skipped (the next readable one is used). Fix or remove the file; "
                "`lightning-siamese data check` lists every problem",
                UnreadableImageWarning,
                stacklevel=2,
            )


class TripletKey(NamedTuple):
    """What :class:`TripletSampler` yields: the anchor pair, its negative (image index), and
    the seed of the triplet's augmentation."""

    anchor: int
    negative: int
    augment_seed: int


class TripletSampler(DistributedSampler):
    """Yields a :class:`TripletKey` per anchor, the order and negatives redrawn every epoch.

    Everything an epoch yields is a function of ``(seed, epoch)`` alone: the order of all
    anchors, their negatives and each triplet's augmentation seed are drawn for the whole split,
    then process ``rank`` of ``num_replicas`` takes every ``num_replicas``-th of them (the tail
    that does not divide is left out, so every process has as many). With a batch size ``B``
    per process, a step's batches over all processes are one batch of ``B * num_replicas`` of a
    single process. Being a ``DistributedSampler``, Lightning calls :meth:`set_epoch` on it and
    does not wrap it; :meth:`start_at` makes the next pass resume an epoch part-way (a
    mid-epoch checkpoint, see :class:`ResumableLoader`).

    Args:
        groups: each pair's negative group (see :func:`negative_groups`).
        seed: fixes every epoch's draws.
        shuffle: shuffle the anchors (off: in pair order).
        num_replicas: the number of processes that share the split.
        rank: this process's number among them.
    """

    def __init__(
        self,
        groups: Sequence[str],
        seed: int = 0,
        shuffle: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        super().__init__(
            cast(Dataset, range(len(groups))),
            num_replicas=num_replicas,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
        )
        self.groups = list(groups)
        self.num_samples = len(self.groups) // num_replicas
        self.total_size = self.num_samples * num_replicas
        self._start: tuple[int, int] | None = None

    def start_at(self, epoch: int, samples: int) -> None:
        """Make the next pass epoch ``epoch`` without its first ``samples`` anchors (counted
        over all processes); later passes follow :meth:`set_epoch` again."""
        self._start = (epoch, samples)

    def epoch_keys(self, epoch: int) -> list[TripletKey]:
        """Every anchor of epoch ``epoch``, in order, over all processes."""
        rng = random.Random(f"train:{self.seed}:{epoch}")
        order = list(range(len(self.groups)))
        if self.shuffle:
            rng.shuffle(order)
        other_groups = len(set(self.groups)) > 1
        negatives = [
            draw_negative(rng, anchor, self.groups, other_groups) for anchor in range(len(order))
        ]
        augment = random.Random(f"augment:{self.seed}:{epoch}")
        return [TripletKey(a, negatives[a], augment.getrandbits(63)) for a in order]

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[TripletKey]:
        epoch, skip = self._start if self._start is not None else (self.epoch, 0)
        self._start = None
        keys = self.epoch_keys(epoch)[: self.total_size][self.rank :: self.num_replicas]
        return iter(keys[skip // self.num_replicas :])


class ResumableLoader(DataLoader):
    """The training DataLoader, which starts every pass where the trainer stands.

    Each pass (``iter``) asks ``progress`` for the epoch in progress and how many of its
    batches are done, and has its :class:`TripletSampler` yield the rest of that epoch: the
    whole of the next one at an epoch's end, the remainder after a mid-epoch checkpoint. The
    trainer's counters come back from the checkpoint before the first pass of a resumed fit, so
    it carries on with the anchors, negatives and augmentation the uninterrupted run would
    have used next, whatever the checkpoint's place. The same place is the ``state_dict``
    Lightning saves with checkpoints (which also tells it the loader resumes mid-epoch).

    Args:
        progress: () -> (the epoch in progress, its batches done on this process, the
            batches it has), read from the trainer; None outside a trainer, where passes
            follow the sampler's ``set_epoch`` as with any ``DistributedSampler``.
        args, kwargs: as for ``DataLoader``, whose sampler must be a :class:`TripletSampler`.
    """

    def __init__(
        self, *args: Any, progress: Callable[[], tuple[int, int, int] | None], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.progress = progress
        self._loaded: dict[str, int] | None = None

    def _triplet_sampler(self) -> TripletSampler:
        sampler = self.sampler
        if not isinstance(sampler, TripletSampler):
            raise TypeError("ResumableLoader needs a TripletSampler as its sampler")
        return sampler

    def __iter__(self) -> Any:
        state, self._loaded = self._loaded or self.state_dict(), None
        self._triplet_sampler().start_at(state["epoch"], state["samples"])
        return super().__iter__()

    def state_dict(self) -> dict[str, int]:
        """``epoch``: the epoch the next batch is of; ``samples``: how many of its anchors,
        over all processes, were trained on already."""
        sampler = self._triplet_sampler()
        progress = self.progress()
        epoch, done, batches = progress if progress is not None else (sampler.epoch, 0, 1)
        if done >= batches:  # the epoch is over: the next one starts from its beginning
            epoch, done = epoch + 1, 0
        samples = done * (self.batch_size or 1) * sampler.num_replicas
        return {"epoch": epoch, "samples": samples, "replicas": sampler.num_replicas}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        replicas = int(state_dict.get("replicas", self._triplet_sampler().num_replicas))
        if state_dict["samples"] and replicas != self._triplet_sampler().num_replicas:
            # Lightning's own batch counter of the epoch would count the other run's batches.
            raise ConfigError(
                f"this checkpoint was written in the middle of epoch {state_dict['epoch']} by "
                f"{replicas} process(es), and this run has {self._triplet_sampler().num_replicas}: "
                f"resume it with {replicas}, or resume from an end-of-epoch checkpoint "
                "(last.ckpt is one unless a mid-epoch save replaced it)"
            )
        self._loaded = {key: int(state_dict[key]) for key in ("epoch", "samples")}
