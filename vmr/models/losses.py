"""Loss terms as pure functions of tensors (no module state), shared by the models.

Reduction, everywhere: a per-row loss is averaged over an item's rows that count (``mask`` True), then over the items
that have at least one such row. That is the paper's "(1/S) sum over samples" and keeps a long video from outweighing
a short one in a batch. An item with no counted row (e.g. no foreground rows) is left out of that term's average; a
batch with none gives an exact 0 that is still connected to the graph.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from vmr.alignment import cosine_cost, soft_dtw
from vmr.spans import generalized_iou_1d


def masked_item_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``values (B, L)`` -> scalar: mean over each item's rows where ``mask (B, L)`` is True, then mean over items
    with at least one such row (exact 0, still differentiable, when there are none)."""
    m = mask.to(values.dtype)
    count = m.sum(dim=1)
    per_item = (values * m).sum(dim=1) / count.clamp(min=1)
    has = count > 0
    if not has.any():
        return (values * 0).sum()
    return per_item[has].mean()


def binary_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MATR's foreground loss: BCE between ``sigmoid(logits)`` and 0/1 ``targets``, all (B, L), on real rows
    (``mask`` True). Computed from logits, which is the same loss as sigmoid + BCE but stable at saturation."""
    bce = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
    return masked_item_mean(bce, mask)


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                       alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss (Lin et al. 2017) on ``sigmoid(logits)``, all (B, L), on real rows; ``alpha`` weighs positives
    (``alpha < 0`` turns the weighting off), ``gamma`` down-weights easy rows. ``gamma=0, alpha<0`` is plain BCE."""
    t = targets.to(logits.dtype)
    p = torch.sigmoid(logits)
    bce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = bce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * t + (1 - alpha) * (1 - t))
    return masked_item_mean(loss, mask)


def offsets_to_spans(offsets: torch.Tensor) -> torch.Tensor:
    """Left/right distances ``(..., 2)`` from a row's centre -> spans ``(..., 2)`` ``[-left, right]`` relative to
    that centre (same units as the offsets)."""
    return torch.stack([-offsets[..., 0], offsets[..., 1]], dim=-1)


def boundary_losses(pred: torch.Tensor, target: torch.Tensor, fg: torch.Tensor,
                    beta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """MATR's boundary terms on foreground rows only: ``(smooth_l1, giou)``.

    pred, target (B, L, 2): non-negative left/right distances from each row's centre to the moment's start/end (any
    unit, the same for both; smooth L1 is not scale-free, so the caller picks a unit where errors of interest are
    below ``beta``). fg (B, L) bool: rows whose offsets are trained. smooth L1 is averaged over the two offsets,
    the GIoU loss is ``1 - GIoU`` of the spans the two offsets make around the row's centre."""
    l1 = F.smooth_l1_loss(pred, target.to(pred.dtype), reduction="none", beta=beta).mean(dim=-1)
    B, L = fg.shape
    giou = torch.zeros(B, L, dtype=pred.dtype, device=pred.device)
    if fg.any():
        sel = fg.bool()
        g = generalized_iou_1d(offsets_to_spans(pred[sel]), offsets_to_spans(target[sel].to(pred.dtype)))
        giou = giou.masked_scatter(sel, 1 - g)
    return masked_item_mean(l1, fg), masked_item_mean(giou, fg)


def alignment_loss(x: torch.Tensor, y: torch.Tensor, x_mask: torch.Tensor, y_mask: torch.Tensor,
                   gamma: float = 0.1, subsequence: bool = True) -> torch.Tensor:
    """Soft-DTW alignment cost between target rows ``x (B, M, d)`` and query rows ``y (B, N, d)``, on real rows only
    (``x_mask (B, M)``, ``y_mask (B, N)``, True = real), with the cosine cost ``1 - cos``.

    ``subsequence=True`` aligns the whole query to a contiguous stretch of the target (free start and end on the
    target side), which is MATR's "aligned frames in the target are contiguous"; ``False`` aligns the two in full.
    Normalisation: each item's soft-DTW value is divided by its number of real query rows. A subsequence path
    visits every query row at least once and has between N and N + (aligned target rows) - 1 cells, so the loss
    stays on the scale of a mean per-cell cosine cost (about 0..2) whatever the target's length. It can dip a
    little below 0: soft-DTW's soft-min is below the hard minimum by up to ``gamma * log(#near-best paths)``."""
    lengths = torch.stack([x_mask.sum(1), y_mask.sum(1)], dim=1).long()
    cost = cosine_cost(x, y)
    value = soft_dtw(cost, gamma, lengths=lengths, subsequence=subsequence)
    return (value / lengths[:, 1].clamp(min=1).to(value.dtype)).mean()


def _per_cell(cost: torch.Tensor, gamma: float, lengths: torch.Tensor, subsequence: bool) -> torch.Tensor:
    """(B,) soft-DTW value divided by the number of cells of the shortest path: ``max(L, N)`` for a full alignment
    of L x N, ``N`` for a subsequence alignment (a per-cell cosine cost, on one scale for both)."""
    value = soft_dtw(cost, gamma, lengths=lengths, subsequence=subsequence)
    cells = lengths[:, 1] if subsequence else lengths.max(1).values
    return value / cells.clamp(min=1).to(value.dtype)


def gather_rows(x: torch.Tensor, rows: torch.Tensor, reverse: torch.Tensor | None = None) -> tuple[torch.Tensor,
                                                                                                  torch.Tensor]:
    """The rows of ``x (B, M, d)`` where ``rows (B, M)`` is True, packed to the front in their order (reversed for
    items where ``reverse (B,)`` is True): ``(packed (B, L, d), mask (B, L))`` with ``L`` the largest count."""
    B, M, d = x.shape
    count = rows.sum(1)
    L = max(int(count.max()), 1) if B else 1
    # stable sort of "not selected" puts the selected rows first, in row order
    order = torch.argsort((~rows).to(torch.int8), dim=1, stable=True)[:, :L]
    if reverse is not None and bool(reverse.any()):
        k = torch.arange(L, device=x.device)[None].expand(B, -1)
        flipped = (count[:, None] - 1 - k).clamp(min=0)
        idx = torch.where(reverse[:, None] & (k < count[:, None]), flipped, k)
        order = order.gather(1, idx)
    packed = x.gather(1, order[..., None].expand(-1, -1, d))
    mask = torch.arange(L, device=x.device)[None] < count[:, None]
    return packed * mask[..., None], mask


def ground_truth_alignment_loss(x: torch.Tensor, y: torch.Tensor, fg: torch.Tensor, y_mask: torch.Tensor,
                                gamma: float = 0.1, reverse: torch.Tensor | None = None,
                                margin: float = 0.0, x_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Soft-DTW alignment of the query with the ground-truth rows of the target only (MATR's matched-frame matrix A
    read as the M x N matches of the moment, not of the whole target).

    ``x (B, M, d)`` target rows, ``y (B, N, d)`` query rows, ``fg (B, M)`` True on the moment's rows, ``y_mask (B, N)``
    True on real query rows. The moment's rows are gathered (:func:`gather_rows`; in reverse order for items where
    ``reverse (B,)`` is True, whose query is the moment played backwards) and aligned with the query in *full*
    soft-DTW on the cosine cost, divided by the shortest path's length ``max(L, N)`` for L moment rows and N query
    rows, so the value is a per-cell cosine cost in about 0..2 whatever the lengths (a fixed divisor keeps the
    gradient exact). Items without a moment row are left out.

    Unlike the subsequence loss over the whole target, it uses the ground truth, but its minimum is still reached when
    rows are pulled together; ``margin > 0`` adds the hinge ``relu(gt - background + margin)``, where ``background``
    is the per-cell value (divided by N) of the best subsequence alignment of the query with the target's *other* rows
    (``x_mask`` its real rows; moment rows priced at the maximum cost 2), so identical rows everywhere cost
    ``margin`` instead of 0."""
    packed, pmask = gather_rows(x, fg.bool(), reverse)
    n_gt, n_q = pmask.sum(1), y_mask.sum(1)
    has = (n_gt > 0) & (n_q > 0)
    if not bool(has.any()):
        return (x * 0).sum() + (y * 0).sum()
    lengths = torch.stack([n_gt.clamp(min=1), n_q.clamp(min=1)], dim=1).long()
    gt = _per_cell(cosine_cost(packed, y), gamma, lengths, subsequence=False)
    if margin > 0 and x_mask is not None:
        cost = cosine_cost(x, y).masked_fill(fg.bool()[..., None], 2.0)
        bg_len = torch.stack([x_mask.sum(1), n_q.clamp(min=1)], dim=1).long()
        gt = torch.relu(gt - _per_cell(cost, gamma, bg_len, subsequence=True) + margin)
    return gt[has].mean()
