"""Training order: every epoch's anchors, negatives and augmentation seeds drawn from ``(seed,
epoch)`` alone, shared out over the processes, and a loader that starts where the trainer stands.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple, cast

from torch.utils.data import DataLoader, Dataset, DistributedSampler

from lightning_siamese.data.negatives import draw_negative
from lightning_siamese.data.views import AugmentViews
from lightning_siamese.errors import ConfigError


class TripletKey(NamedTuple):
    """What :class:`TripletSampler` yields: the anchor pair, its negative (image index), the
    seed of the triplet's augmentation, and under fixed augmented views the view each of its
    three images takes (anchor, positive, negative; see :mod:`~lightning_siamese.data.views`)."""

    anchor: int
    negative: int
    augment_seed: int
    views: tuple[int, int, int] | None = None


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
        views: the fixed augmented views the images take, one per image and epoch (None:
            each triplet drawn afresh from its augmentation seed).
    """

    def __init__(
        self,
        groups: Sequence[str],
        seed: int = 0,
        shuffle: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
        views: AugmentViews | None = None,
    ) -> None:
        super().__init__(
            cast(Dataset, range(len(groups))),
            num_replicas=num_replicas,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
        )
        self.groups = list(groups)
        self.views = views
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
        seeds = [augment.getrandbits(63) for _ in order]
        if self.views is None:
            return [TripletKey(a, negatives[a], seed) for a, seed in zip(order, seeds, strict=True)]
        view = self.views.epoch_views(epoch)
        return [
            TripletKey(a, negatives[a], seed, (view[2 * a], view[2 * a + 1], view[negatives[a]]))
            for a, seed in zip(order, seeds, strict=True)
        ]

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


def epoch_place(trainer: Any, loader_batches: int) -> tuple[int, int, int] | None:
    """Where a Lightning trainer stands, for :class:`ResumableLoader`'s ``progress``: (the
    epoch in progress, its batches done on this process, the batches it has, of the
    ``loader_batches`` the loader gives); None without a trainer."""
    if trainer is None:
        return None
    limit = trainer.limit_train_batches  # an int counts batches, a float is a share
    batches = min(limit, loader_batches) if isinstance(limit, int) else int(limit * loader_batches)
    done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
    return trainer.current_epoch, done, batches
