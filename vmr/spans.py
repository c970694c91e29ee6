"""1-D span geometry: temporal IoU, generalised IoU, non-maximum suppression, centre/width conversion.

Spans are half-open ``[start, end)`` intervals in the last axis (``(..., 2)``). Every function here is unit-agnostic:
pass seconds or fractional frame positions, as long as both arguments use the same unit. Functions marked "numpy or
torch" accept either and return the same kind; importing this module does not import torch.

Degenerate cases (documented choices): a span with ``end <= start`` has length 0; the IoU of two spans whose union is
empty (both zero-length) is 0, never NaN.
"""
from __future__ import annotations

import sys

import numpy as np


def _is_torch(x) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _intersection_union(a, b):
    """(intersection, union) lengths of broadcast spans ``a``, ``b`` (..., 2); numpy or torch."""
    if _is_torch(a) or _is_torch(b):
        import torch

        a, b = torch.as_tensor(a), torch.as_tensor(b)
        if a.dtype != b.dtype:
            dt = torch.promote_types(a.dtype, b.dtype)
            a, b = a.to(dt), b.to(dt)
        inter = (torch.minimum(a[..., 1], b[..., 1]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
        len_a = (a[..., 1] - a[..., 0]).clamp(min=0)
        len_b = (b[..., 1] - b[..., 0]).clamp(min=0)
    else:
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        inter = np.clip(np.minimum(a[..., 1], b[..., 1]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
        len_a = np.clip(a[..., 1] - a[..., 0], 0, None)
        len_b = np.clip(b[..., 1] - b[..., 0], 0, None)
    return inter, len_a + len_b - inter


def temporal_iou(a, b):
    """Temporal IoU of spans ``a`` and ``b`` (..., 2), broadcast against each other -> (...). Numpy or torch.

    IoU = |a ∩ b| / |a ∪ b| in [0, 1]; 0 when the union is empty.
    """
    inter, union = _intersection_union(a, b)
    if _is_torch(inter):
        import torch

        return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), torch.zeros_like(inter))
    out = np.zeros_like(inter)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def pairwise_iou(a, b):
    """IoU of every span in ``a`` (K, 2) against every span in ``b`` (L, 2) -> (K, L). Numpy or torch."""
    return temporal_iou(a[:, None, :], b[None, :, :])


def generalized_iou_1d(pred, gt):
    """Generalised IoU (Rezatofighi et al. 2019) of spans ``pred`` and ``gt`` (..., 2), broadcast -> (...). Torch.

    GIoU = IoU - |hull \\ union| / |hull|, in [-1, 1], where hull is the smallest span covering both; differentiable in
    both arguments, so ``1 - GIoU`` serves as a span loss that still has a gradient when the spans do not overlap.
    For a (K, L) matching cost use ``generalized_iou_1d(pred[:, None], gt[None])``.
    """
    import torch

    pred, gt = torch.as_tensor(pred), torch.as_tensor(gt)
    inter, union = _intersection_union(pred, gt)
    tiny = torch.finfo(union.dtype).eps
    iou = inter / union.clamp(min=tiny)
    hull = (torch.maximum(pred[..., 1], gt[..., 1]) - torch.minimum(pred[..., 0], gt[..., 0])).clamp(min=0)
    return iou - (hull - union) / hull.clamp(min=tiny)


def nms_1d(spans, iou_threshold: float = 0.7, top_k: int | None = None):
    """Greedy non-maximum suppression of scored spans (K, 3) ``[start, end, score]`` -> (K', 3), best first.

    Spans are visited by decreasing score (ties keep their input order); a span is dropped when its IoU with an
    already kept span is strictly greater than ``iou_threshold`` (so ``iou_threshold=1.0`` only sorts, and
    ``iou_threshold=0`` keeps only non-overlapping spans). Stops after ``top_k`` kept spans when given.
    Numpy (returned as float64) or torch (returned with the input's dtype and device).
    """
    as_torch = _is_torch(spans)
    if as_torch:
        device, dtype = spans.device, spans.dtype
        arr = spans.detach().cpu().double().numpy()
    else:
        arr = np.asarray(spans, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"nms_1d expects (K, 3) [start, end, score] spans, got shape {arr.shape}")
    order = np.argsort(-arr[:, 2], kind="stable")
    arr = arr[order]
    limit = len(arr) if top_k is None else max(int(top_k), 0)
    alive = np.ones(len(arr), dtype=bool)
    keep: list[int] = []
    i = 0
    while i < len(arr) and len(keep) < limit:
        keep.append(i)
        rest = slice(i + 1, None)
        alive[rest] &= temporal_iou(arr[i, :2], arr[rest, :2]) <= iou_threshold
        survivors = np.flatnonzero(alive[rest])
        if not len(survivors):
            break
        i = i + 1 + int(survivors[0])
    out = arr[keep]
    if as_torch:
        import torch

        return torch.as_tensor(out, dtype=dtype, device=device)
    return out


def cxw_to_se(spans):
    """``[centre, width]`` -> ``[start, end]`` (..., 2), the parametrisation DETR-style heads regress. Numpy or torch."""
    c, w = spans[..., 0], spans[..., 1]
    parts = (c - 0.5 * w, c + 0.5 * w)
    if _is_torch(spans):
        import torch

        return torch.stack(parts, dim=-1)
    return np.stack(parts, axis=-1)


def se_to_cxw(spans):
    """``[start, end]`` -> ``[centre, width]`` (..., 2). Numpy or torch."""
    s, e = spans[..., 0], spans[..., 1]
    parts = (0.5 * (s + e), e - s)
    if _is_torch(spans):
        import torch

        return torch.stack(parts, dim=-1)
    return np.stack(parts, axis=-1)
