"""The random state of every process, saved in checkpoints and restored when a fit resumes.

The data's randomness needs none of this: each epoch's order, negatives and augmentation are
drawn from ``(data.seed, epoch)`` (see
:class:`~lightning_siamese.data.sampling.TripletSampler`). What is left is the model's own:
dropout and stochastic depth draw from the global torch generators of each process, which a
resumed fit would otherwise start afresh.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.utilities import rank_zero_warn

#: The checkpoint key.
KEY = "random_state"


def capture(trainer: pl.Trainer, device: torch.device) -> dict[str, torch.Tensor]:
    """The torch CPU (and CUDA) generator states of every process, one row per rank. Called
    on every process, as Lightning saves a checkpoint (a collective operation)."""
    states = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return {name: _gather(state.to(device), trainer.world_size) for name, state in states.items()}


def _gather(state: torch.Tensor, world_size: int) -> torch.Tensor:
    """Every process's ``state``, one row per rank, on the CPU (NCCL gathers CUDA tensors
    only: ``state`` is on the process's device). torch's collective itself: Lightning's
    ``all_gather`` goes through a helper torch 2.14 deprecates."""
    if world_size == 1 or not (dist.is_available() and dist.is_initialized()):
        return state.reshape(1, -1).cpu()
    rows = [torch.empty_like(state) for _ in range(world_size)]
    dist.all_gather(rows, state)
    return torch.stack(rows).reshape(world_size, -1).cpu()


def restore(
    states: dict[str, torch.Tensor] | None, trainer: pl.Trainer, device: torch.device
) -> None:
    """Put back this process's generator states from ``states`` (what :func:`capture` saved,
    from a run with as many processes) on ``device``: call it once the model is there."""
    if not states:
        return
    if len(states["torch"]) != trainer.world_size:
        rank_zero_warn(
            f"the checkpoint holds the random state of {len(states['torch'])} processes, this run "
            f"has {trainer.world_size}: random layers (dropout) start from a fresh state"
        )
        return
    torch.set_rng_state(states["torch"][trainer.global_rank].clone())
    if "cuda" in states and device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"][trainer.global_rank].clone(), device)
