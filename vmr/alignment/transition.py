"""Semantic transition points around an anchor frame (A2FA paper, Eqs. 3-5), batched.

Given frame features ``V`` (rows ``0..n-1`` valid) and an anchor row ``a``, the frames left of the anchor are split
into a prefix that belongs with the *first* frame ``v_0`` and a segment ``[bL, a]`` that belongs with the anchor; the
frames right of it into ``[a, bR]`` (with the anchor) and a suffix that belongs with the *last* frame ``v_{n-1}``. Each
split maximises the summed cosine similarity of every frame to the prototype of its side:

    bL = argmax_{b in [0, a]}      sum_{i < b} cos(v_0, v_i)      + sum_{b <= i <= a} cos(v_a, v_i)
    bR = argmax_{b in [a, n-1]}    sum_{a <= i <= b} cos(v_a, v_i) + sum_{b < i < n} cos(v_{n-1}, v_i)

This is the transition point of a hard DTW path (cost ``1 - cos``) aligning ``v_a..v_{n-1}`` to the two-frame
sequence ``(v_a, v_{n-1})`` (tested against :func:`vmr.alignment.dtw_path`), and the mirror image on the left: the
paper's "apply DTW to detect a semantic transition point". Because an end frame scores 1 with itself, the end frame
joins the anchor's segment only on an exact tie (or when the anchor is that end frame).

Resolving the paper's Eq. 3 / Eq. 4 indexing disagreement: Eq. 4 sums the anchor side over ``[A, b]`` (anchor
included, ``b^R`` the *last* frame with the anchor), while Eq. 3 sums the first-frame side over ``[2, b]`` and the
anchor side over ``[b+1, A]``, so its ``b^L`` is the last frame *not* with the anchor (one row left of the segment),
and its ``b = A`` hands the anchor itself to the other side. We take Eq. 4 as written and Eq. 3 as its mirror image,
so ``[bL, bR]`` is exactly the set of frames assigned to the anchor (what Eqs. 5-6 keep unmasked), the anchor is
always inside, and the result is symmetric under reversing time. Ties go to the wider segment (smallest ``bL``,
largest ``bR``).

Rows are 0-based here (the paper's are 1-based). Padding must be trailing (as :func:`vmr.data.samples.collate` lays it
out); padded rows never enter a sum and ``n - 1`` is each item's last *valid* row.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _prefix(x: torch.Tensor) -> torch.Tensor:
    """(B, M) -> (B, M+1) exclusive prefix sums: out[:, k] = sum_{i<k} x[:, i]."""
    return F.pad(torch.cumsum(x, dim=1), (1, 0))


def transition_points(feats: torch.Tensor, anchor: torch.Tensor, mask: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Left and right semantic transition points around each item's anchor row.

    feats  (B, M, D) frame features (any scale; cosine similarity is used)
    anchor (B,) long, the anchor row of each item (must be a valid row)
    mask   (B, M) bool, True for valid rows, trailing padding only; None = all rows valid
    returns ``(bL, bR)``, each (B,) long rows with ``bL <= anchor <= bR``: the anchor segment is rows ``[bL, bR]``
    (inclusive). Not differentiable (an argmax); computed without building a graph.
    """
    if feats.ndim != 3:
        raise ValueError(f"feats must be (B, M, D), got {tuple(feats.shape)}")
    B, M, _ = feats.shape
    if mask is None:
        mask = torch.ones(B, M, dtype=torch.bool, device=feats.device)
    mask = mask.to(device=feats.device, dtype=torch.bool)
    n = mask.sum(dim=1)
    if (n == 0).any():
        raise ValueError("every item needs at least one valid row")
    rows = torch.arange(M, device=feats.device)
    if not torch.equal(mask, rows[None, :] < n[:, None]):
        raise ValueError("mask must mark a prefix of valid rows (trailing padding only)")
    anchor = anchor.to(device=feats.device, dtype=torch.long)
    if ((anchor < 0) | (anchor >= n)).any():
        raise ValueError("anchor row outside the valid rows")

    with torch.no_grad():
        unit = F.normalize(feats, dim=-1)
        idx = torch.arange(B, device=feats.device)
        proto = torch.stack([unit[idx, 0], unit[idx, anchor], unit[idx, n - 1]], dim=1)  # (B, 3, D)
        sims = torch.einsum("bkd,bmd->bkm", proto, unit) * mask[:, None, :]  # (B, 3, M), zero on padding
        p_first, p_anchor, p_last = _prefix(sims[:, 0]), _prefix(sims[:, 1]), _prefix(sims[:, 2])  # (B, M+1)
        a = anchor[:, None]
        # left: b in [0, a]; score(b) = P_first(b) + P_anchor(a+1) - P_anchor(b)
        left = p_first[:, :M] - p_anchor[:, :M] + p_anchor.gather(1, a + 1)
        left = left.masked_fill(rows[None, :] > a, float("-inf"))
        b_left = left.argmax(dim=1)  # first maximum = smallest b = widest segment
        # right: b in [a, n-1]; score(b) = P_anchor(b+1) - P_anchor(a) + P_last(n) - P_last(b+1)
        right = p_anchor[:, 1:] - p_last[:, 1:] - p_anchor.gather(1, a) + p_last.gather(1, n[:, None])
        right = right.masked_fill((rows[None, :] < a) | ~mask, float("-inf"))
        b_right = (M - 1) - right.flip(1).argmax(dim=1)  # last maximum = largest b = widest segment
    return b_left, b_right


def segment_mask(b_left: torch.Tensor, b_right: torch.Tensor, length: int) -> torch.Tensor:
    """(B,) inclusive row bounds -> (B, length) bool, True for rows in ``[bL, bR]`` (the unmasked frames of Eq. 6)."""
    rows = torch.arange(length, device=b_left.device)
    return (rows[None, :] >= b_left[:, None]) & (rows[None, :] <= b_right[:, None])
