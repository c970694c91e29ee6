"""Frame-to-frame cost matrices for alignment."""
from __future__ import annotations

import torch


class _CosineCost(torch.autograd.Function):
    """1 - <x_i, y_j> / (max(|x_i|, eps) max(|y_j|, eps)) with a hand-written backward.

    Neither forward nor backward forms the normalised features: S = (x @ y^T) * a_i * b_j with a = 1/max(|x|, eps),
    b = 1/max(|y|, eps), and for dS = -d cost,
        dx = (dS * a_i * b_j) @ y - x * (a_i^2 * sum_j dS_ij S_ij)   (second term only where |x_i| > eps)
    (and symmetrically dy), so each direction costs one bmm and one fused multiply-add over the (., D) features, where
    autograd through F.normalize would make several full passes.
    """

    @staticmethod
    def forward(ctx, x, y, eps):
        nx = torch.linalg.vector_norm(x, dim=-1, keepdim=True)  # (B, M, 1)
        ny = torch.linalg.vector_norm(y, dim=-1, keepdim=True)  # (B, N, 1)
        ax, ay = 1.0 / nx.clamp_min(eps), 1.0 / ny.clamp_min(eps)
        sim = torch.matmul(x, y.transpose(-1, -2)).mul_(ax).mul_(ay.transpose(-1, -2))
        ctx.save_for_backward(x, y, ax, ay, nx > eps, ny > eps, sim)
        return torch.sub(1.0, sim)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_cost):
        x, y, ax, ay, x_on, y_on, sim = ctx.saved_tensors
        d_sim = -grad_cost
        p = d_sim * ax * ay.transpose(-1, -2)  # (B, M, N)
        dx = dy = None
        if ctx.needs_input_grad[0]:
            r = (d_sim * sim).sum(-1, keepdim=True)  # (B, M, 1) = <d xn_i, xn_i>
            dx = torch.matmul(p, y).addcmul_(x, torch.where(x_on, -(r * ax * ax), 0.0))
        if ctx.needs_input_grad[1]:
            r = (d_sim * sim).sum(-2).unsqueeze(-1)  # (B, N, 1)
            dy = torch.matmul(p.transpose(-1, -2), x).addcmul_(y, torch.where(y_on, -(r * ay * ay), 0.0))
        return dx, dy, None


def cosine_cost(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``1 - cos(x_i, y_j)`` for every pair of rows.

    x: (B, M, D) target rows, y: (B, N, D) query rows -> (B, M, N), values in [0, 2]. Rows are L2-normalised here
    (as ``F.normalize(., eps=eps)`` does, so an all-zero padding row has cost 1), so the inputs need not be normalised.
    Differentiable in x and y (first derivatives). Unbatched (M, D), (N, D) inputs give (M, N).
    """
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"feature sizes differ: x {tuple(x.shape)}, y {tuple(y.shape)}")
    if x.dim() != y.dim() or x.dim() not in (2, 3):
        raise ValueError(
            f"expected x (B, M, D) and y (B, N, D) (or both unbatched), got {tuple(x.shape)}, {tuple(y.shape)}")
    return _CosineCost.apply(x, y, float(eps))
