"""Anti-diagonal ("wavefront") layout shared by soft-DTW and hard DTW.

The dynamic programmes run on the accumulated-cost table R of shape (M+1, N+1): R index (i, j) with 1 <= i <= M,
1 <= j <= N is cost cell (i-1, j-1); row 0 and column 0 are the boundary. Every cell of anti-diagonal k = i + j depends
only on diagonals k-1 and k-2, so one diagonal of the whole batch is updated by a handful of tensor operations.

Layout: a tensor of shape (K, W, B) with K = M + N + 1 diagonals, W = N + 1 positions and the batch innermost;
position p on diagonal k holds R index (i, j) = (k - p, p). The position runs along the query axis (N, usually the
shorter one), so a diagonal is at most N + 1 wide, and with the batch innermost any run of positions of one diagonal
is one contiguous block of memory (fully vectorised element-wise kernels). For the cell at (k, p):

    vertical parent   (i-1, j)   -> (k-1, p)      target advances, query stays
    horizontal parent (i, j-1)   -> (k-1, p-1)    query advances, target stays
    diagonal parent   (i-1, j-1) -> (k-2, p-1)    both advance

Each step updates positions 1..N of one diagonal, including the few that fall outside the table near the corners (their
cost is "no cell", so they stay at -inf): a fixed width lets every operand of every step be made by one ``unbind`` of
a strided view, and per-step Python overhead, not arithmetic, is what costs at these sizes.
"""
from __future__ import annotations

from functools import lru_cache

import torch


def check_inputs(cost: torch.Tensor, lengths) -> tuple[torch.Tensor, bool]:
    """Validate a (B, M, N) cost. Returns lengths as a (B, 2) int64 tensor on cost's device (full sizes if None) and
    whether any item is padded."""
    if not isinstance(cost, torch.Tensor) or cost.dim() != 3:
        raise ValueError(f"cost must be a (B, M, N) tensor, got {getattr(cost, 'shape', type(cost))}")
    B, M, N = cost.shape
    if B == 0 or M == 0 or N == 0:
        raise ValueError(f"cost must be non-empty, got shape {tuple(cost.shape)}")
    if not cost.is_floating_point():
        raise ValueError(f"cost must be floating point, got {cost.dtype}")
    if lengths is None:
        return torch.tensor([[M, N]], dtype=torch.long, device=cost.device).expand(B, 2), False
    lengths = torch.as_tensor(lengths, device=cost.device).long()
    if lengths.shape != (B, 2):
        raise ValueError(
            f"lengths must have shape ({B}, 2) holding each item's valid (M, N), got {tuple(lengths.shape)}")
    lo = lengths.min(dim=0).values.tolist()
    hi = lengths.max(dim=0).values.tolist()
    if min(lo) < 1 or hi[0] > M or hi[1] > N:
        raise ValueError(f"lengths must lie in [1, {M}] x [1, {N}], got rows {lengths.tolist()}")
    return lengths, lo != [M, N]


@lru_cache(maxsize=64)
def _gather_index(M: int, N: int, device: str) -> torch.Tensor:
    """(K * W,) row index into a (M * N + 1)-row flat cost whose last row is the "no cell" filler."""
    K, W = M + N + 1, N + 1
    k = torch.arange(K).view(K, 1)
    p = torch.arange(W).view(1, W)
    i = k - p
    valid = (p >= 1) & (i >= 1) & (i <= M)
    idx = torch.where(valid, (i - 1) * N + (p - 1), torch.full_like(i, M * N))
    return idx.reshape(-1).to(device)


@lru_cache(maxsize=64)
def _scatter_index(M: int, N: int, width: int, device: str) -> torch.Tensor:
    """(M * N,) row of each cost cell (row-major) in a diagonal layout with ``width`` positions, viewed as rows."""
    i = torch.arange(1, M + 1).view(M, 1)
    j = torch.arange(1, N + 1).view(1, N)
    return ((i + j) * width + j).reshape(-1).to(device)


def to_diagonals(values: torch.Tensor, lengths: torch.Tensor, padded: bool, fill: float, scale: float = 1.0):
    """(B, M, N) cell values times ``scale`` -> (K, W, B) diagonal layout; boundary, out-of-table and padded cells
    (beyond an item's lengths) get ``fill``."""
    B, M, N = values.shape
    rows = values.new_empty((M * N + 1, B))
    cells = rows[:-1].view(M, N, B)
    torch.mul(values.permute(1, 2, 0), scale, out=cells)
    rows[-1] = fill
    if padded:
        row_ok = torch.arange(M, device=values.device).view(M, 1, 1) < lengths[:, 0]
        col_ok = torch.arange(N, device=values.device).view(1, N, 1) < lengths[:, 1]
        cells.masked_fill_(~(row_ok & col_ok), fill)
    return rows.index_select(0, _gather_index(M, N, str(values.device))).view(M + N + 1, N + 1, B)


def from_diagonals(diag: torch.Tensor, M: int, N: int) -> torch.Tensor:
    """Contiguous (K', W', B) diagonal layout (K' >= M + N + 1, W' >= N + 1; extras ignored) -> (B, M, N) cells."""
    _, width, B = diag.shape
    rows = diag.view(-1, B).index_select(0, _scatter_index(M, N, width, str(diag.device)))
    return rows.view(M, N, B).permute(2, 0, 1).contiguous()


def valid_mask(lengths: torch.Tensor, M: int, N: int) -> torch.Tensor:
    """(B, M, N) bool: cost cells inside each item's valid (M_b, N_b)."""
    rows = torch.arange(M, device=lengths.device).view(1, M, 1) < lengths[:, 0].view(-1, 1, 1)
    cols = torch.arange(N, device=lengths.device).view(1, 1, N) < lengths[:, 1].view(-1, 1, 1)
    return rows & cols


def end_positions(lengths: torch.Tensor, M: int, subsequence: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Diagonal and position of each item's end cell(s) in the layout.

    Full alignment: one end cell (M_b, N_b) -> (B,), (B,). Subsequence: every (i, N_b), i = 1..M, -> (B, M), (B, M);
    the rows i > M_b are padding and hold -inf (soft) or are masked (hard) by the caller.
    """
    Mb, Nb = lengths[:, 0], lengths[:, 1]
    if not subsequence:
        return Mb + Nb, Nb
    rows = torch.arange(1, M + 1, device=lengths.device).view(1, M)
    return rows + Nb.view(-1, 1), Nb.view(-1, 1).expand(-1, M)
