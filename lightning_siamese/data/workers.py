"""Where a loader's worker processes start. Pure torch.

A process of a distributed run has threads (gloo's or NCCL's, Lightning's process observer)
that a fork does not copy, and a lock one of them holds at the fork stays locked in the worker
for good (pytorch/pytorch#130610; Python 3.14 makes the fork server its default for this
reason). So in such a process the workers start from a fork server: a process of one thread,
with the datasets' modules imported once, that forks each worker. Elsewhere they fork from the
loading process (the fastest start).
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.context import BaseContext

import torch.distributed as dist

#: What the fork server imports once, so that each worker starts with the datasets' modules.
PRELOAD = ["lightning_siamese.data.triplets", "lightning_siamese.data.image_files"]


def worker_context(num_workers: int) -> BaseContext | None:
    """The ``multiprocessing_context`` of a DataLoader with ``num_workers`` workers: the fork
    server in a process of a distributed run (more than one process), else None (the
    default, fork on Linux)."""
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    if num_workers == 0 or not distributed:
        return None
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context
