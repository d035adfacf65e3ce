"""Feature maps to head inputs: deterministic grid pooling, and a ViT's tokens as a map. Pure
torch."""

from __future__ import annotations

import torch
from torch import nn


def pooling_matrix(size: int, bins: int) -> torch.Tensor:
    """(bins, size): row ``i`` averages positions ``floor(i * size / bins)`` to
    ``ceil((i + 1) * size / bins) - 1``, the bins of ``AdaptiveAvgPool2d``."""
    matrix = torch.zeros(bins, size)
    for row in range(bins if size else 0):
        start, end = (row * size) // bins, -(-((row + 1) * size) // bins)
        matrix[row, start:end] = 1.0 / (end - start)
    return matrix


class GridPool(nn.Module):
    """Average pooling to a ``size`` x ``size`` grid, the same as ``AdaptiveAvgPool2d(size)``
    but deterministic on CUDA too: ``AdaptiveAvgPool2d``'s CUDA backward accumulates with
    atomic adds, which ``torch.use_deterministic_algorithms(True)`` (``--trainer.deterministic
    true``) refuses. A grid that divides the feature map is a reshape and a mean; another is
    two small matrix products with the bins' weights. Both differentiate deterministically.

    Args:
        size: the side of the output grid.
        feature_shape: the (height, width) of the inputs, when known: the bins' weights are
            then buffers that move with the module (and are constants of a traced export).
    """

    rows: torch.Tensor
    columns: torch.Tensor

    def __init__(self, size: int, feature_shape: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.size = size
        height, width = feature_shape or (0, 0)
        self.register_buffer("rows", pooling_matrix(height, size), persistent=False)
        self.register_buffer("columns", pooling_matrix(width, size), persistent=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = features.shape
        size = self.size
        if height % size == 0 and width % size == 0:
            cells = features.reshape(batch, channels, size, height // size, size, width // size)
            return cells.mean(dim=(3, 5))
        rows, columns = self.rows, self.columns
        if rows.shape[1] != height or columns.shape[1] != width:  # another input size
            rows = pooling_matrix(height, size).to(features.device)
            columns = pooling_matrix(width, size).to(features.device)
        rows, columns = rows.to(features.dtype), columns.to(features.dtype)
        return torch.einsum("ph,bchw,qw->bcpq", rows, features, columns)

    def extra_repr(self) -> str:
        return f"size={self.size}"


class TokenGrid(nn.Module):
    """A ViT's tokens (B, prefix + H*W, C) -> its patch tokens as a map (B, C, H, W), so the
    heads pool and flatten them as a CNN's features; the prefix (class and register tokens)
    is left out.

    Args:
        prefix: how many tokens come before the patches (timm's ``num_prefix_tokens``).
        grid: the patch grid's (height, width).
    """

    def __init__(self, prefix: int, grid: tuple[int, int]) -> None:
        super().__init__()
        self.prefix, self.grid = prefix, (int(grid[0]), int(grid[1]))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, self.prefix :]
        return patches.transpose(1, 2).reshape(tokens.shape[0], -1, *self.grid)

    def extra_repr(self) -> str:
        return f"prefix={self.prefix}, grid={self.grid}"
