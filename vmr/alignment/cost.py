"""Frame-to-frame cost matrices for alignment."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def cosine_cost(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``1 - cos(x_i, y_j)`` for every pair of rows.

    x: (B, M, D) target rows, y: (B, N, D) query rows -> (B, M, N), values in [0, 2]. Rows are L2-normalised here
    (with ``eps`` guarding all-zero padding rows, whose cost is then 1), so the inputs need not be normalised.
    Differentiable through ordinary autograd. Unbatched (M, D), (N, D) inputs give (M, N).
    """
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"feature sizes differ: x {tuple(x.shape)}, y {tuple(y.shape)}")
    if x.dim() != y.dim() or x.dim() not in (2, 3):
        raise ValueError(f"expected x (B, M, D) and y (B, N, D) (or both unbatched), got {tuple(x.shape)}, {tuple(y.shape)}")
    xn = F.normalize(x, dim=-1, eps=eps)
    yn = F.normalize(y, dim=-1, eps=eps)
    return 1.0 - xn @ yn.transpose(-1, -2)
