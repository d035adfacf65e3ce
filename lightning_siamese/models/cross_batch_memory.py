"""A cross-batch memory (Wang et al., "Cross-Batch Memory for Embedding Learning", CVPR 2020):
the embeddings of recent batches, kept as extra negatives for InfoNCE and in-batch mining.
Pure torch.

Once the embedding drifts slowly, an embedding computed a few steps ago is nearly the one the
network would compute now, so the last ``size`` positives (the right-hand images of the pairs,
the side a gallery holds) stand in for a batch many times larger at no network cost. The memory
fills from the first step and joins the negatives after ``start`` steps (the paper waits for
the embedding to settle). Every process pushes the same global batch (gathered), so the memory
is the same on every process. Entries are detached: no gradient reaches them.
"""

from __future__ import annotations

import torch

from lightning_siamese.errors import ConfigError


class CrossBatchMemory:
    """A first-in first-out store of the last ``size`` embeddings with their group numbers.

    Args:
        size: how many embeddings it keeps (a step's batch enters whole, the oldest leave).
        start: the number of pushes (training batches) before :meth:`entries` returns any.
    """

    def __init__(self, size: int, start: int = 0) -> None:
        if not (isinstance(size, int) and size > 0):
            raise ConfigError(f"the memory size must be an integer > 0, got {size}")
        if not (isinstance(start, int) and start >= 0):
            raise ConfigError(f"the memory start must be an integer >= 0, got {start}")
        self.size = size
        self.start = start
        self.steps = 0
        self.embeddings: torch.Tensor | None = None  # (size, D), the oldest first
        self.groups: torch.Tensor | None = None  # (size,)
        self.filled = 0

    def entries(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(embeddings, groups) in the memory, oldest first, once ``start`` steps were pushed;
        None before, or while it is empty."""
        if self.steps < self.start or self.filled == 0 or self.embeddings is None:
            return None
        assert self.groups is not None
        return self.embeddings[-self.filled :], self.groups[-self.filled :]

    @torch.no_grad()
    def push(self, embeddings: torch.Tensor, groups: torch.Tensor) -> None:
        """Add a step's embeddings (N, D) with their groups (N,); one step counted."""
        embeddings, groups = embeddings.detach()[-self.size :], groups.detach()[-self.size :]
        if self.embeddings is None or self.groups is None:
            self.embeddings = embeddings.new_zeros((self.size, embeddings.shape[1]))
            self.groups = groups.new_full((self.size,), -1)
        elif self.embeddings.shape[1] != embeddings.shape[1]:
            raise ValueError(
                f"embeddings of {embeddings.shape[1]} dimensions pushed into a memory of "
                f"{self.embeddings.shape[1]}"
            )
        if self.embeddings.device != embeddings.device:  # e.g. restored before the model moved
            self.embeddings = self.embeddings.to(embeddings.device)
            self.groups = self.groups.to(embeddings.device)
        rows = embeddings.shape[0]
        device, dtype = self.embeddings.device, self.embeddings.dtype
        self.embeddings = torch.cat([self.embeddings[rows:], embeddings.to(device, dtype)])
        self.groups = torch.cat([self.groups[rows:], groups.to(device)])
        self.filled = min(self.size, self.filled + rows)
        self.steps += 1

    def state_dict(self) -> dict[str, torch.Tensor | int]:
        """The memory as a checkpoint holds it (CPU tensors and integers), for an exact resume."""
        state: dict[str, torch.Tensor | int] = {
            "size": self.size,
            "start": self.start,
            "steps": self.steps,
            "filled": self.filled,
        }
        if self.embeddings is not None and self.groups is not None:
            state["embeddings"] = self.embeddings.cpu()
            state["groups"] = self.groups.cpu()
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor | int], device: torch.device) -> None:
        """Put a :meth:`state_dict` back (on ``device``); its size must be this memory's."""
        if state["size"] != self.size:
            raise ConfigError(
                f"the checkpoint's cross-batch memory holds {state['size']} embeddings, this "
                f"model's {self.size}: resume with --model.memory_size {state['size']}"
            )
        self.steps, self.filled = int(state["steps"]), int(state["filled"])
        embeddings, groups = state.get("embeddings"), state.get("groups")
        if isinstance(embeddings, torch.Tensor) and isinstance(groups, torch.Tensor):
            self.embeddings, self.groups = embeddings.to(device), groups.to(device)
