"""One batch over every process of a data-parallel run (DDP): each process's rows gathered into
the global batch, with gradients flowing back to the process that owns each row. Pure torch.

The training sampler deals a global batch's triplets to the processes in turn (row ``i`` to
process ``i % N``), so :func:`gather_rows` puts the gathered rows back in that order: the global
batch is row for row the batch one process would have had. Outside a process group (or with one
process) nothing is gathered.

Gradients: a process's loss reads every process's rows; the backward pass sums each row's
gradient over the processes (an all-reduce) and keeps its own rows'. With each process's loss
scaled as its share of the global mean (:meth:`GlobalBatch.mean`), DDP's average of the
processes' gradients is the gradient of the global batch's loss, as on one process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(number of processes, this process's rank) of the default process group; (1, 0) when
    there is none."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class _AllGather(torch.autograd.Function):
    """(rows, ...) on each process -> (processes, rows, ...); backward: every process's
    gradient of the whole summed, this process's part kept."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        size, rank = world()
        ctx.rank = rank
        parts = [torch.empty_like(tensor) for _ in range(size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.stack(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank]


class _AllReduce(torch.autograd.Function):
    """The sum over the processes; backward: the gradient summed over the processes."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.contiguous().clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over the processes, differentiable; ``tensor`` itself when alone."""
    return _AllReduce.apply(tensor) if world()[0] > 1 else tensor


def _gather(tensor: torch.Tensor) -> torch.Tensor:
    if tensor.requires_grad:
        return _AllGather.apply(tensor)
    parts = [torch.empty_like(tensor) for _ in range(world()[0])]
    dist.all_gather(parts, tensor.contiguous())
    return torch.stack(parts)


def gather_rows(*tensors: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Every process's rows of each tensor, in the global batch's order, and the positions of
    this process's rows in it. The tensors of one process have the same number of rows;
    processes may have different numbers (the shorter ones are padded for the collective)."""
    size, rank = world()
    rows = tensors[0].shape[0]
    device = tensors[0].device
    if size == 1:
        return list(tensors), torch.arange(rows, device=device)
    counts = _gather(torch.tensor([rows], device=device)).flatten().tolist()
    longest = max(counts)
    # (longest, processes) grid of the global order, row-major; absent cells are padding.
    present = torch.arange(longest, device=device)[:, None] < torch.tensor(counts, device=device)
    present = present.flatten()
    gathered = []
    for tensor in tensors:
        padding = tensor.new_zeros((longest - rows, *tensor.shape[1:]))
        stacked = _gather(torch.cat([tensor, padding]))  # (processes, longest, ...)
        gathered.append(stacked.transpose(0, 1).flatten(0, 1)[present])
    position = present.long().cumsum(0) - 1
    cells = torch.arange(rows, device=device) * size + rank
    return gathered, position[cells]


@dataclass
class GlobalBatch:
    """A batch of triplets over every process: the embeddings and group numbers of the global
    batch (see :func:`gather_rows`) and where this process's rows are in it.

    Attributes:
        anchor, positive, negative: (T, D) embeddings of the global batch's T triplets.
        group_ids, negative_group_ids: (T,) the group of each pair and of each given negative.
        local: (b,) the global positions of this process's b triplets.
    """

    anchor: torch.Tensor
    positive: torch.Tensor
    negative: torch.Tensor
    group_ids: torch.Tensor
    negative_group_ids: torch.Tensor
    local: torch.Tensor

    @classmethod
    def gather(
        cls,
        anchor: torch.Tensor,
        positive: torch.Tensor,
        negative: torch.Tensor,
        group_ids: torch.Tensor | None,
        negative_group_ids: torch.Tensor | None,
    ) -> GlobalBatch:
        """The global batch of this process's share. Default groups: each pair its own (its
        global position), each given negative none of the batch's (-1)."""
        rows, device = anchor.shape[0], anchor.device
        if negative_group_ids is None:
            negative_group_ids = torch.full((rows,), -1, device=device)
        placeholder = torch.zeros(rows, dtype=torch.long, device=device)
        ids = torch.stack([group_ids.to(device) if group_ids is not None else placeholder,
                           negative_group_ids.to(device)], 1)  # fmt: skip
        embeddings = torch.stack([anchor, positive, negative], dim=1)
        (stacked, all_ids), local = gather_rows(embeddings, ids)
        if group_ids is None:  # every process's default: each pair its global position
            all_ids[:, 0] = torch.arange(all_ids.shape[0], device=device)
        a, p, n = stacked.unbind(1)
        return cls(a, p, n, all_ids[:, 0], all_ids[:, 1], local)

    @property
    def size(self) -> int:
        return int(self.anchor.shape[0])

    def mean(self, losses: torch.Tensor, per_triplet: int = 1) -> torch.Tensor:
        """This process's share of the global batch's mean loss, scaled so that the average
        over the processes (DDP's, and the logged figure's) is that mean: ``losses`` are this
        process's (``per_triplet`` of them for each of its triplets)."""
        processes = world()[0]
        return losses.sum() * processes / (self.size * per_triplet)
