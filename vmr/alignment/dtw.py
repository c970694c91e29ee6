"""Hard DTW: the single best alignment path, and the target span the query aligns to.

Same conventions as :mod:`vmr.alignment.soft_dtw`: ``cost`` (B, M, N) has target rows (M) and query columns (N),
``lengths`` (B, 2) each item's valid (M_b, N_b). Full alignment runs from (0, 0) to (M_b-1, N_b-1); subsequence
alignment takes the whole query and any contiguous run of target rows (open begin and end along M).

Why the crop comes from hard DTW on the cost, not from the soft-DTW expected alignment: MATR's decoder needs one
contiguous target span [s, e) (the paper calls A^post a *binary* alignment matrix). Hard DTW gives exactly that, is the
gamma -> 0 limit of soft-DTW's expected alignment, and needs no extra threshold; thresholding the soft alignment would
add a free parameter and can give broken or empty spans when gamma is large. The crop is discrete, so it carries no
gradient either way; the alignment *loss* stays soft-DTW.

Ties between equally cheap parents are broken in a fixed order: diagonal, then vertical (target advances), then
horizontal (query advances); a subsequence path starts afresh rather than stretching the first query frame over an
earlier row of equal (zero) cost, and among equally cheap end rows the earliest wins. Computed along anti-diagonals
over the whole batch (no Python loop over cells); only :func:`dtw_path`'s backtracking loops, over the path's steps.
"""
from __future__ import annotations

import torch

from vmr.alignment._diagonals import check_inputs, end_positions, to_diagonals

_NEG_INF = float("-inf")
_DIAG, _VERT, _HORIZ = 0, 1, 2


@torch.no_grad()
def _hard_wavefront(cost: torch.Tensor, lengths: torch.Tensor, padded: bool, subsequence: bool):
    """Max-plus DP on q = -R. Returns q (K, W, B), parent choice (K, W, B) int8, path start row (K, W, B) int64."""
    B, M, N = cost.shape
    K, W = M + N + 1, N + 1
    neg = to_diagonals(cost.detach(), lengths, padded, _NEG_INF, scale=-1.0)
    # buffers with a leading diagonal "-1", as in soft_dtw._forward
    qbuf = cost.new_full((K + 1, W, B), _NEG_INF)
    choice = torch.zeros((K + 1, W, B), dtype=torch.int8, device=cost.device)
    start = torch.zeros((K + 1, W, B), dtype=torch.long, device=cost.device)
    if subsequence:
        qbuf[1:, 0] = 0.0  # R[i, 0] = 0: start at any target row
        # boundary cell (i, 0) as the *diagonal* parent of (i+1, 1) starts the path at cost row i
        start[1:, 0] = torch.arange(K, device=cost.device).view(K, 1)
    else:
        qbuf[1, 0] = 0.0

    def parts(t):  # per step k = 2..K-1: cells 1..N of diagonal k, their vertical, horizontal, diagonal parents
        return t[3:, 1:].unbind(0), t[2:K, 1:].unbind(0), t[2:K, :-1].unbind(0), t[1 : K - 1, :-1].unbind(0)

    for q_out, q_vert, q_horiz, q_diag, ch_out, s_out, s_vert, s_horiz, s_diag, negk in zip(
            *parts(qbuf), parts(choice)[0], *parts(start), neg[2:, 1:].unbind(0)):
        best, src = q_diag.clone(), s_diag.clone()
        for parent, parent_start, code in ((q_vert, s_vert, _VERT), (q_horiz, s_horiz, _HORIZ)):
            better = parent > best
            best = torch.where(better, parent, best)
            src = torch.where(better, parent_start, src)
            ch_out.masked_fill_(better, code)
        torch.add(negk, best, out=q_out)
        s_out.copy_(src)
    return qbuf[1:], choice[1:], start[1:]


def _end_cells(q: torch.Tensor, lengths: torch.Tensor, subsequence: bool):
    """Diagonal and position of each item's best end cell, (B,) each."""
    B = lengths.shape[0]
    M = q.shape[0] - q.shape[1]
    kend, pend = end_positions(lengths, M, subsequence)
    if subsequence:
        batch = torch.arange(B, device=q.device).view(-1, 1)
        row = q[kend, pend, batch].argmax(dim=1)  # padded rows are -inf; argmax returns the first maximum
        return kend[torch.arange(B, device=q.device), row], pend[:, 0]
    return kend, pend


def _as_batch(cost: torch.Tensor, lengths):
    if isinstance(cost, torch.Tensor) and cost.dim() == 2:
        if lengths is not None:
            raise ValueError("lengths applies to a batched (B, M, N) cost only")
        return cost.unsqueeze(0), None, True
    return cost, lengths, False


def dtw(cost: torch.Tensor, lengths=None, subsequence: bool = False) -> torch.Tensor:
    """Hard DTW value of each item: the minimum summed cost over alignment paths. (B, M, N) -> (B,), no gradient."""
    lengths, padded = check_inputs(cost, lengths)
    q, _, _ = _hard_wavefront(cost, lengths, padded, subsequence)
    kend, pend = _end_cells(q, lengths, subsequence)
    return -q[kend, pend, torch.arange(cost.shape[0], device=cost.device)]


def dtw_path(cost: torch.Tensor, subsequence: bool = False, lengths=None):
    """The best alignment path as a list of (target_row, query_col) cost indices, first to last.

    cost (M, N) -> list[tuple[int, int]]; cost (B, M, N) (with optional lengths (B, 2)) -> one such list per item.
    """
    cost, lengths, single = _as_batch(cost, lengths)
    lengths, padded = check_inputs(cost, lengths)
    q, choice, _ = _hard_wavefront(cost, lengths, padded, subsequence)
    kend, pend = _end_cells(q, lengths, subsequence)
    choice = choice.cpu().numpy()
    paths = []
    for b, (k, j) in enumerate(zip(kend.tolist(), pend.tolist())):
        i, path = k - j, []
        while j >= 1 and i >= 1:
            path.append((i - 1, j - 1))
            c = choice[i + j, j, b]
            if c == _DIAG:
                i, j = i - 1, j - 1
            elif c == _VERT:
                i -= 1
            else:
                j -= 1
        paths.append(path[::-1])
    return paths[0] if single else paths


def aligned_span(cost: torch.Tensor, lengths=None) -> torch.Tensor:
    """Target rows [start_row, end_row) that the whole query aligns to under hard subsequence DTW.

    cost (B, M, N) -> (B, 2) int64 on cost's device (or (M, N) -> (2,)); rows index the cost's M axis, so
    0 <= start_row < end_row <= M_b. Convert to seconds with :mod:`vmr.timeline`, never by hand.
    """
    cost, lengths, single = _as_batch(cost, lengths)
    lengths, padded = check_inputs(cost, lengths)
    q, _, start = _hard_wavefront(cost, lengths, padded, subsequence=True)
    kend, pend = _end_cells(q, lengths, subsequence=True)
    batch = torch.arange(cost.shape[0], device=cost.device)
    span = torch.stack([start[kend, pend, batch], kend - pend], dim=1)  # end row (R index) = exclusive cost row
    return span[0] if single else span
