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

Precision: the tables hold log-partition values of size ~ path cost / gamma, so in float32 the backward's
parent-to-child probabilities carry ~1e-7 * path cost / gamma relative error. Measured for B=64, M=75, N=30, 1 - cos
costs: values within 5e-7 relative of float64 at every gamma; the alignment (gradient) within 3e-6 (gamma=1),
2e-4 (gamma=0.1) and 2e-3 (gamma=0.01) absolute (its entries lie in [0, 1]). Pass a float64 cost for more; the
float64 results agree with tslearn to ~1e-15.
"""
from __future__ import annotations

import math

import torch

from vmr.alignment._diagonals import check_inputs, end_positions, from_diagonals, to_diagonals, valid_mask

_NEG_INF = float("-inf")


def _check_gamma(gamma: float) -> float:
    gamma = float(gamma)
    if not gamma > 0 or not math.isfinite(gamma):
        raise ValueError(f"gamma must be a positive number, got {gamma}")
    return gamma


def _forward(cost: torch.Tensor, gamma: float, lengths: torch.Tensor, padded: bool, subsequence: bool):
    """Run the wavefront. Returns value (B,), q table (K, W, B), neg-cost table (K, W, B), end info for backward."""
    B, M, N = cost.shape
    K, W = M + N + 1, N + 1
    neg = to_diagonals(cost, lengths, padded, _NEG_INF, scale=-1.0 / gamma)  # -cost/gamma, -inf off the valid cells
    qbuf = cost.new_full((K + 1, W, B), _NEG_INF)  # qbuf[0] is a "k = -1" diagonal so that diagonal k-2 always exists
    q = qbuf[1:]
    if subsequence:
        q[:, 0] = -math.log(2.0)  # R[i, 0] = gamma*log 2 (see module docstring)
    else:
        q[0, 0] = 0.0
    # step k = 2..K-1 updates positions 1..N of diagonal k (qbuf[k + 1]) from diagonals k-1 (qbuf[k]) and k-2
    steps = zip(qbuf[3:, 1:].unbind(0), qbuf[2:K, 1:].unbind(0), qbuf[2:K, :-1].unbind(0),
                qbuf[1 : K - 1, :-1].unbind(0), neg[2:, 1:].unbind(0))
    for out, vert, horiz, diag, negk in steps:
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
    return value, q, neg, (kend, pend, seed, lengths, padded)


def _backward(q: torch.Tensor, neg: torch.Tensor, end, M: int, N: int) -> torch.Tensor:
    """Expected alignment (B, M, N) = d value / d cost, from the forward tables."""
    K, W, B = q.shape
    kend, pend, seed, lengths, padded = end
    # s = -cost/gamma - q at each cell (-inf off the table: -inf - -inf = nan -> -inf; one extra position and two extra
    # diagonals of -inf); the probability that child c came from parent p is exp(q_p + s_c).
    s = q.new_full((K + 2, W + 1, B), _NEG_INF)
    torch.sub(neg, q, out=s[:K, :W]).nan_to_num_(nan=_NEG_INF, posinf=math.inf, neginf=_NEG_INF)
    w = q.new_empty((3, K, N, B))  # weights of parents at positions 1..N to their vertical, horizontal, diagonal child
    torch.add(q[:, 1:], s[1 : K + 1, 1:W], out=w[0])
    torch.add(q[:, 1:], s[1 : K + 1, 2:], out=w[1])
    torch.add(q[:, 1:], s[2:, 2:], out=w[2])
    # floored just above log(smallest normal): subnormal results make exp ~30x slower on x86 (so does exp(-inf)); the
    # floor turns weights that should be ~0 into ~1e-38 (float32), invisible in valid cells; padding is zeroed below
    w.clamp_min_(math.log(torch.finfo(w.dtype).tiny) + 1.0).exp_()
    del s  # lower peak memory
    g = q.new_zeros((K + 2, W + 1, B))
    batch = torch.arange(B, device=q.device)
    if seed is None:
        g[kend, pend, batch] = 1.0
    else:
        g[kend, pend, batch.view(-1, 1)] = seed
    # step k = K-1..2: positions 1..N of diagonal k collect from their children on diagonals k+1 and k+2
    steps = zip(g[2:K, 1:W].unbind(0), g[3 : K + 1, 1:W].unbind(0), g[3 : K + 1, 2:].unbind(0), g[4:, 2:].unbind(0),
                w[0, 2:].unbind(0), w[1, 2:].unbind(0), w[2, 2:].unbind(0))
    for gk, g_vert, g_horiz, g_diag, wv, wh, wd in reversed(tuple(steps)):
        gk.addcmul_(g_vert, wv)
        gk.addcmul_(g_horiz, wh)
        gk.addcmul_(g_diag, wd)
    align = from_diagonals(g, M, N)
    if padded:
        align.masked_fill_(~valid_mask(lengths, M, N), 0.0)
    return align


class _SoftDTW(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cost, gamma, lengths, subsequence):
        value, q, neg, end = _forward(cost.detach(), gamma, *lengths, subsequence)
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
    """(B, M, N) soft alignment matrix: d soft_dtw / d cost, each cell's probability of lying on the path (0 on
    padding).

    Full alignment: entries in [0, 1], A[0, 0] = A[M_b-1, N_b-1] = 1. Subsequence: each query column's entries sum
    to at least 1 (the query is always fully aligned) and the target rows may be mostly empty.
    """
    lengths = check_inputs(cost, lengths)
    _, q, neg, end = _forward(cost.detach(), _check_gamma(gamma), *lengths, bool(subsequence))
    _, M, N = cost.shape
    return _backward(q, neg, end, M, N)
