"""Video-query localisation metrics (MATR's SportsMoments protocol): R@1 at IoU 0.3/0.5/0.7 and mIoU.

Exactly one prediction counts per query id: its top-1 window, i.e. the highest-scoring window (the first one on ties,
so a best-first list gives its first window). Its IoU is taken against the best-overlapping ground-truth window (one
for SportsMoments). A ground-truth query with no prediction (or an empty window list) counts as IoU 0 and is reported
in ``n_missing``; predictions for query ids absent from the ground truth are ignored and counted in ``n_extra``;
duplicate query ids are an error. All numbers are percentages of the ``n`` ground-truth queries, unrounded.
IoU is the true temporal IoU of ``[start, end)`` spans (:func:`vmr.spans.temporal_iou`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from vmr.errors import InputError
from vmr.spans import pairwise_iou

THRESHOLDS: tuple[float, ...] = (0.3, 0.5, 0.7)


def top1_iou(pred_windows, gt_windows) -> float:
    """IoU of the top-1 of ``pred_windows`` (K, 3) [start, end, score] with the best-overlapping of ``gt_windows``
    (G, 2); 0 when there is no prediction. Seconds (or any unit shared by both)."""
    pred = np.asarray(pred_windows, dtype=np.float64).reshape(-1, 3)
    gt = np.asarray(gt_windows, dtype=np.float64).reshape(-1, 2)
    if len(gt) == 0:
        raise ValueError("no ground-truth window to compare with")
    if len(pred) == 0:
        return 0.0
    best = pred[int(np.argmax(pred[:, 2])), :2]
    return float(pairwise_iou(best[None], gt).max())


def summarize_ious(ious: Sequence[float], thresholds: Sequence[float] = THRESHOLDS) -> dict:
    """``{"R1@t": % of ious >= t for each t, "mIoU": 100 * mean IoU, "n": count}`` from per-query top-1 IoUs."""
    ious = np.asarray(ious, dtype=np.float64)
    if len(ious) == 0:
        raise ValueError("no queries to summarise")
    out = {f"R1@{t:g}": float(100.0 * np.mean(ious >= t)) for t in thresholds}
    out["mIoU"] = float(100.0 * np.mean(ious))
    out["n"] = int(len(ious))
    return out


def video_query_metrics(predictions: list[dict], ground_truth: list[dict],
                        thresholds: Sequence[float] = THRESHOLDS) -> dict:
    """Moment-DETR-layout rows (see :mod:`vmr.metrics.io`) -> ``{"R1@0.3", "R1@0.5", "R1@0.7", "mIoU"}`` in percent,
    plus ``"n"`` (ground-truth queries), ``"n_missing"`` (of those, without a prediction: scored IoU 0) and
    ``"n_extra"`` (predicted qids not in the ground truth: ignored)."""
    pred: dict = {}
    for row in predictions:
        if row["qid"] in pred:
            raise InputError(f"duplicate qid {row['qid']!r} in the predictions: one prediction per query is scored")
        pred[row["qid"]] = row["pred_relevant_windows"]
    seen: set = set()
    ious, missing = [], 0
    for row in ground_truth:
        q = row["qid"]
        if q in seen:
            raise InputError(f"duplicate qid {q!r} in the ground truth")
        seen.add(q)
        if not row["relevant_windows"]:
            raise InputError(f"ground truth for qid {q!r} has no relevant_windows")
        windows = pred.get(q) or []
        missing += not windows
        ious.append(top1_iou(windows, row["relevant_windows"]))
    if not ious:
        raise InputError("the ground truth has no queries")
    out = summarize_ious(ious, thresholds)
    out["n_missing"] = int(missing)
    out["n_extra"] = int(sum(q not in seen for q in pred))
    return out
