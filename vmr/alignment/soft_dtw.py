"""Batched, differentiable soft-DTW (Cuturi & Blondel, ICML 2017) over precomputed cost matrices.

Conventions
-----------
``cost`` is (B, M, N): rows are **target** frames (M), columns are **query** frames (N); ``lengths`` (B, 2) holds each
item's valid (M_b, N_b), the rest is padding that never changes an item's value or gradient.

    R[0, 0] = 0, R[i, 0] = R[0, j] = +inf otherwise
    R[i, j] = cost[i-1, j-1] + softmin_gamma(R[i-1, j-1], R[i-1, j], R[i, j-1])
    softmin_gamma(a, b, c) = -gamma * log(exp(-a/gamma) + exp(-b/gamma) + exp(-c/gamma))
    soft_dtw = R[M_b, N_b]

so soft_dtw = softmin_gamma over all monotone paths from (0, 0) to (M_b-1, N_b-1) of the path's summed cost.

**gamma** is in the units of the cost (1 - cos lies in [0, 2]): it is the temperature of the soft-min. As gamma -> 0 the
value tends to hard DTW (the minimum path cost) from below, within gamma * log(number of paths); large gamma averages
over many paths, and the value can be negative. The gradient w.r.t. ``cost`` is the *expected alignment* A (B, M, N):
the probability, under the Gibbs distribution exp(-path cost / gamma), that the path passes through each cell.

**Subsequence alignment** (``subsequence=True``): the whole query aligns to any contiguous run of target rows (open
begin and open end along M; the query side stays closed). The boundary becomes

    R[i, 0] = 0 for every i >= 0 (a path may start at any target row), R[0, j] = +inf for j >= 1
    soft_dtw = softmin_gamma over i = 1..M_b of R[i, N_b]   (a path may end at any target row)

Implementation note: in the recursion the cell (i, 1) sees *two* boundary parents, R[i-1, 0] (diagonal) and R[i, 0]
(horizontal), which would count each start twice and shift the value by -gamma*log 2. We store the boundary as
gamma*log 2 instead of 0, so the two parents together weigh exactly one start: softmin over {start here, continue from
(i-1, 1)} and every subsequence path is counted once. As gamma -> 0 this is hard subsequence DTW.

Computation: along anti-diagonals (a wavefront over the batch, see :mod:`vmr.alignment._diagonals`), in the
log-domain ``q = -R / gamma`` so that one cell update is two ``logaddexp`` and one add; the backward pass is the
Cuturi-Blondel recursion run along the same diagonals, with the parent-to-child probabilities computed in bulk.
Works on CPU and CUDA in float32 or float64 (the dtype of ``cost``); costs must be finite. Only first derivatives.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch

from vmr.alignment._diagonals import (
    check_inputs,
    diagonal_ranges,
    end_positions,
    from_diagonals,
    row_views,
    wavefront_bounds,
    to_diagonals,
)

_NEG_INF = float("-inf")


def _check_gamma(gamma: float) -> float:
    gamma = float(gamma)
    if not gamma > 0 or not math.isfinite(gamma):
        raise ValueError(f"gamma must be a positive number, got {gamma}")
    return gamma


@lru_cache(maxsize=64)
def _backward_bounds(M: int, N: int) -> tuple[tuple[int, ...], ...]:
    """Row bounds of each non-empty diagonal's gradient and its vertical, horizontal and diagonal children in the
    (K + 2) * (W + 1) rows of the gradient buffer, and of its parent->child weights in K * W rows."""
    W, W1 = N + 1, N + 2
    spans = [[], [], [], [], []]
    for k, (lo, hi) in enumerate(diagonal_ranges(M, N)):
        if lo < hi:
            starts = (k * W1 + lo, (k + 1) * W1 + lo, (k + 1) * W1 + lo + 1, (k + 2) * W1 + lo + 1, k * W + lo)
            for out, start in zip(spans, starts):
                out += [start, start + hi - lo]
    return tuple(tuple(s) for s in spans)


def _forward(cost: torch.Tensor, gamma: float, lengths: torch.Tensor, subsequence: bool):
    """Run the wavefront. Returns value (B,), q table (K, W, B), neg-cost table (K, W, B), end info for backward."""
    B, M, N = cost.shape
    K, W = M + N + 1, N + 1
    neg = to_diagonals(cost * (-1.0 / gamma), lengths, _NEG_INF)  # -cost/gamma, -inf off the valid cells
    qbuf = cost.new_full((K + 1, W, B), _NEG_INF)  # qbuf[0] is a "k = -1" diagonal so that diagonal k-2 always exists
    q = qbuf[1:]
    if subsequence:
        q[:, 0] = -math.log(2.0)  # R[i, 0] = gamma*log 2 (see module docstring)
    else:
        q[0, 0] = 0.0
    qrows, nrows = qbuf.view(-1, B), neg.view(-1, B)
    b_out, b_vert, b_horiz, b_diag, b_neg = wavefront_bounds(M, N)
    for out, vert, horiz, diag, negk in zip(row_views(qrows, b_out), row_views(qrows, b_vert), row_views(qrows, b_horiz),
                                           row_views(qrows, b_diag), row_views(nrows, b_neg)):
        torch.logaddexp(vert, horiz, out=out)
        torch.logaddexp(out, diag, out=out)
        out.add_(negk)
    kend, pend = end_positions(lengths, M, subsequence)
    batch = torch.arange(B, device=cost.device)
    if subsequence:
        qend = q[kend, pend, batch.view(-1, 1)]  # (B, M); rows beyond M_b are -inf
        lse = torch.logsumexp(qend, dim=1)
        seed = torch.exp(qend - lse.view(-1, 1))  # softmax over the end row
        value = -gamma * lse
    else:
        value = -gamma * q[kend, pend, batch]
        seed = None
    return value, q, neg, (kend, pend, seed)


def _backward(q: torch.Tensor, neg: torch.Tensor, end, M: int, N: int) -> torch.Tensor:
    """Expected alignment (B, M, N) = d value / d cost, from the forward tables."""
    K, W, B = q.shape
    kend, pend, seed = end
    # s = -cost/gamma - q at each valid child (-inf elsewhere, including one extra position and two extra diagonals);
    # the probability that child c came from parent p is exp(q_p + s_c).
    s = q.new_full((K + 2, W + 1, B), _NEG_INF)
    torch.where(neg > _NEG_INF, neg - q, s[:K, :W], out=s[:K, :W])
    w_vert = torch.exp(q + s[1 : K + 1, :W])  # parent (k, p) -> child (k+1, p)
    w_horiz = torch.exp(q + s[1 : K + 1, 1:])  # parent (k, p) -> child (k+1, p+1)
    w_diag = torch.exp(q + s[2 : K + 2, 1:])  # parent (k, p) -> child (k+2, p+1)
    g = q.new_zeros((K + 2, W + 1, B))
    batch = torch.arange(B, device=q.device)
    if seed is None:
        g[kend, pend, batch] = 1.0
    else:
        g[kend, pend, batch.view(-1, 1)] = seed
    grows = g.view(-1, B)
    b_g, b_vert, b_horiz, b_diag, b_w = _backward_bounds(M, N)
    steps = zip(row_views(grows, b_g), row_views(grows, b_vert), row_views(grows, b_horiz), row_views(grows, b_diag),
                row_views(w_vert.view(-1, B), b_w), row_views(w_horiz.view(-1, B), b_w),
                row_views(w_diag.view(-1, B), b_w))
    for gk, g_vert, g_horiz, g_diag, wv, wh, wd in reversed(tuple(steps)):
        gk.addcmul_(g_vert, wv)
        gk.addcmul_(g_horiz, wh)
        gk.addcmul_(g_diag, wd)
    return from_diagonals(g[:K], M, N)


class _SoftDTW(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cost, gamma, lengths, subsequence):
        value, q, neg, end = _forward(cost.detach(), gamma, lengths, subsequence)
        ctx.save_for_backward(q, neg)
        ctx.end = end
        ctx.shape = cost.shape
        return value

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_value):
        q, neg = ctx.saved_tensors
        _, M, N = ctx.shape
        align = _backward(q, neg, ctx.end, M, N)
        return align * grad_value.view(-1, 1, 1), None, None, None


def soft_dtw(cost: torch.Tensor, gamma: float = 0.1, lengths=None, subsequence: bool = False) -> torch.Tensor:
    """Soft-DTW value of each item.

    cost: (B, M, N) finite costs, target rows x query columns (e.g. :func:`vmr.alignment.cosine_cost`).
    gamma: soft-min temperature (> 0), in cost units. lengths: optional (B, 2) ints, each item's valid (M_b, N_b).
    subsequence: align the whole query to any contiguous part of the target (open begin/end along M).
    Returns (B,) in cost's dtype, differentiable w.r.t. ``cost`` (gradient = :func:`expected_alignment`).
    """
    lengths = check_inputs(cost, lengths)
    return _SoftDTW.apply(cost, _check_gamma(gamma), lengths, bool(subsequence))


@torch.no_grad()
def expected_alignment(cost: torch.Tensor, gamma: float = 0.1, lengths=None, subsequence: bool = False) -> torch.Tensor:
    """(B, M, N) soft alignment matrix: d soft_dtw / d cost, each cell's probability of lying on the path (0 on padding).

    Full alignment: entries in [0, 1], A[0, 0] = A[M_b-1, N_b-1] = 1. Subsequence: each query column's entries sum
    to at least 1 (the query is always fully aligned) and the target rows may be mostly empty.
    """
    lengths = check_inputs(cost, lengths)
    _, q, neg, end = _forward(cost.detach(), _check_gamma(gamma), lengths, bool(subsequence))
    _, M, N = cost.shape
    return _backward(q, neg, end, M, N)
