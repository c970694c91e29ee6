"""Moment-DETR's standalone evaluation (QVHighlights), re-implemented so that its numbers and keys match the reference.

Moment retrieval (MR), per ground-truth length bucket ``short`` (0, 10], ``middle`` (10, 30], ``long`` (30, 150] seconds
and ``full`` (every window):

- ``MR-R1@t``: the top-1 predicted window (the first one, predictions being best first) is paired with the
  ground-truth window it overlaps most; a hit when their IoU >= t. Percentage of queries.
- ``MR-mAP@t``: per query, the first 10 predicted windows, by decreasing score, are greedily matched to ground-truth
  windows (each ground-truth window matched at most once, the highest-IoU free one first); the query's AP is the
  all-point interpolated area under its precision-recall curve. Mean over queries, in percent; ``average`` is the mean
  over the ten thresholds t = 0.5, 0.55, ..., 0.95.
- A bucket keeps the queries with at least one ground-truth window whose length is in the bucket, and only those
  windows (a query with a 5 s and a 40 s window counts in ``short`` with its 5 s window and in ``long`` with its 40 s).

Highlight detection (HL), when predictions carry ``pred_saliency_scores`` (one per ``clip_length``-second clip):
ground-truth clip scores (0-4, three annotators) are binarised at >= 2 (``Fair``), 3 (``Good``), 4 (``VeryGood``);
``HL-Hit1`` is the percentage of queries whose top-scored clip is positive for at least one annotator, ``HL-mAP`` the
mean over queries and annotators of the average precision of the clip ranking. A prediction with more clip scores
than the video's ``int(duration / clip_length)`` clips has the extra ones ignored; one with fewer has the missing
clips scored 0 (both as in the reference).

Every reported number is ``float(f"{100 * x:.2f}")``, as in the reference. Behaviour details kept for exactness:
R1 computes IoU with the hull of the two spans as the union (equal to the true union whenever they overlap); ties
between ground-truth windows go to the later window; predictions tied in score keep their order.

Choices where the reference is silent or crashes (documented, not guessed): a prediction row with no windows is a miss
(R1 IoU 0, AP 0); a ground-truth row without windows, a duplicate qid, or a qid present in only one of the two files
(unless ``match_number=False``) is an :class:`~vmr.errors.InputError`.
"""
from __future__ import annotations

import numpy as np

from vmr.errors import InputError

IOU_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
LENGTH_BUCKETS: dict[str, tuple[float, float] | None] = {
    "short": (0.0, 10.0), "middle": (10.0, 30.0), "long": (30.0, 150.0), "full": None,
}
SALIENCY_LEVELS: dict[str, int] = {"Fair": 2, "Good": 3, "VeryGood": 4}
MAX_PRED_WINDOWS = 10


def _pct(x: float) -> float:
    return float(f"{100 * x:.2f}")


def _by_qid(rows: list[dict], what: str) -> dict:
    out = {}
    for r in rows:
        if r["qid"] in out:
            raise InputError(f"duplicate qid {r['qid']!r} in the {what}")
        out[r["qid"]] = r
    return out


# ----------------------------------------------------------------------------------------------------------- moments
def _cross_iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(P, 2) x (G, 2) -> (P, G) IoU with union = len(a) + len(b) - intersection."""
    inter = np.clip(np.minimum(pred[:, None, 1], gt[None, :, 1]) - np.maximum(pred[:, None, 0], gt[None, :, 0]), 0, None)
    union = (pred[:, 1] - pred[:, 0])[:, None] + (gt[:, 1] - gt[:, 0])[None, :] - inter
    out = np.zeros_like(inter)
    np.divide(inter, union, out=out, where=union != 0)
    return out


def _hull_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two spans with the hull as the union (the reference's R1 pairing)."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    hull = max(a[1], b[1]) - min(a[0], b[0])
    return inter / hull if hull != 0 else 0.0


def _descending(values: np.ndarray) -> np.ndarray:
    """Indices by decreasing value; among equal values the later index comes first."""
    return np.argsort(values, kind="stable")[::-1]


def _interpolated_ap(tp: np.ndarray, n_gt: int) -> float:
    """All-point interpolated AP of a ranked list with true-positive flags ``tp`` (P,) against ``n_gt`` windows."""
    tp_cum = np.cumsum(tp).astype(float)
    fp_cum = np.cumsum(1.0 - tp)
    recall = np.concatenate([[0.0], tp_cum / n_gt, [1.0]])
    precision = np.concatenate([[0.0], tp_cum / (tp_cum + fp_cum), [0.0]])
    envelope = np.maximum.accumulate(precision[::-1])[::-1]  # best precision at this recall or beyond
    steps = np.flatnonzero(recall[1:] != recall[:-1]) + 1
    return float(np.sum((recall[steps] - recall[steps - 1]) * envelope[steps]))


def query_average_precision(pred: np.ndarray, gt: np.ndarray, thresholds=IOU_THRESHOLDS) -> np.ndarray:
    """AP of one query at each IoU threshold -> (T,). ``pred`` (P, 3) [start, end, score]; ``gt`` (G, 2); seconds.

    Predictions are visited by decreasing score; at each threshold a prediction is a true positive when its
    highest-IoU ground-truth window that is still unmatched has IoU >= the threshold (a better-overlapping window
    already taken is skipped, a worse one below the threshold makes it a false positive).
    """
    thresholds = np.asarray(thresholds, dtype=float)
    if len(pred) == 0 or len(gt) == 0:
        return np.zeros(len(thresholds))
    pred = pred[np.argsort(-pred[:, 2], kind="stable")]
    iou = _cross_iou(pred[:, :2], gt)
    candidates = [[(g, iou[p, g]) for g in _descending(iou[p])] for p in range(len(pred))]
    ap = np.zeros(len(thresholds))
    done: dict[bytes, float] = {}  # thresholds often give the same hits; compute each distinct ranking once
    for t, thr in enumerate(thresholds):
        taken = np.zeros(len(gt), dtype=bool)
        tp = np.zeros(len(pred))
        for p, ranked in enumerate(candidates):
            for g, overlap in ranked:
                if overlap < thr:
                    break
                if not taken[g]:
                    taken[g] = True
                    tp[p] = 1.0
                    break
        if tp.any():
            key = tp.tobytes()
            if key not in done:
                done[key] = _interpolated_ap(tp, len(gt))
            ap[t] = done[key]
    return ap


def _windows(rows: dict, key: str) -> dict:
    return {q: np.asarray(r[key], dtype=np.float64).reshape(-1, 3 if key.startswith("pred") else 2)
            for q, r in rows.items()}


def _in_bucket(gt: np.ndarray, bucket: tuple[float, float] | None) -> np.ndarray:
    if bucket is None:
        return gt
    lo, hi = bucket
    length = gt[:, 1] - gt[:, 0]
    return gt[(length > lo) & (length <= hi)]


def _bucket_scores(pred: dict, gt: dict, qids: list, bucket) -> dict | None:
    ap_rows, r1_ious = [], []
    for q in qids:
        g = _in_bucket(gt[q], bucket)
        if len(g) == 0:
            continue
        p = pred[q]
        ap_rows.append(query_average_precision(p[:MAX_PRED_WINDOWS], g))
        if len(p) == 0:
            r1_ious.append(0.0)
        else:
            best = int(np.argmax(_cross_iou(p[:1, :2], g)[0]))  # the first best-overlapping window
            r1_ious.append(_hull_iou(p[0, :2], g[best]))
    if not ap_rows:
        return None
    ap_per_thr = np.mean(np.stack(ap_rows), axis=0)
    mean_ap = {str(t): _pct(v) for t, v in zip(IOU_THRESHOLDS, ap_per_thr)}
    mean_ap["average"] = _pct(np.mean(ap_per_thr))
    ious = np.asarray(r1_ious)
    r1 = {str(t): _pct(np.mean(ious >= t)) for t in IOU_THRESHOLDS}
    return {"MR-mAP": mean_ap, "MR-R1": r1}


def _matched(predictions: list[dict], ground_truth: list[dict], match_number: bool) -> tuple[dict, dict, list]:
    pred, gt = _by_qid(predictions, "predictions"), _by_qid(ground_truth, "ground truth")
    missing = [q for q in gt if q not in pred]
    extra = [q for q in pred if q not in gt]
    if match_number and (missing or extra):
        raise InputError(
            f"predictions and ground truth must cover the same qids: {len(missing)} ground-truth qids have no "
            f"prediction (e.g. {missing[:3]}), {len(extra)} predicted qids are not in the ground truth "
            f"(e.g. {extra[:3]}); to score the shared ones only, pass --shared-only to vmr eval "
            "(match_number=False in Python)")
    qids = [q for q in pred if q in gt]
    if not qids:
        raise InputError("predictions and ground truth share no qid")
    return pred, gt, qids


def eval_moment_retrieval(predictions: list[dict], ground_truth: list[dict], match_number: bool = True) -> dict:
    """``{"short"|"middle"|"long"|"full": {"MR-mAP": {"0.5": .., ..., "average": ..}, "MR-R1": {"0.5": .., ...}}}``,
    percentages rounded to 2 decimals. A bucket with no ground-truth window in its range is left out."""
    pred, gt, qids = _matched(predictions, ground_truth, match_number)
    for q in qids:
        if not gt[q]["relevant_windows"]:
            raise InputError(f"ground truth for qid {q!r} has no relevant_windows; cannot evaluate moment retrieval")
    pw, gw = _windows(pred, "pred_relevant_windows"), _windows(gt, "relevant_windows")
    out = {}
    for name, bucket in LENGTH_BUCKETS.items():
        scores = _bucket_scores(pw, gw, qids, bucket)
        if scores is not None:
            out[name] = scores
    return out


# --------------------------------------------------------------------------------------------------------- highlights
def clip_saliency(gt_row: dict, clip_length: float = 2.0) -> np.ndarray:
    """(n_clips, A) ground-truth saliency per ``clip_length``-second clip (0 for unlisted clips), from
    ``relevant_clip_ids``/``saliency_scores``; ``n_clips = int(duration / clip_length)`` as in the reference."""
    n_clips = int(gt_row["duration"] / clip_length)
    scores = np.asarray(gt_row["saliency_scores"], dtype=np.float64)
    ids = np.asarray(gt_row["relevant_clip_ids"], dtype=np.int64)
    full = np.zeros((n_clips, scores.shape[1] if scores.ndim == 2 else 3))
    if len(ids) and ids.max() >= n_clips:
        raise InputError(f"qid {gt_row['qid']!r}: relevant clip id {ids.max()} beyond {n_clips} clips of the video")
    full[ids] = scores
    return full


def ranking_average_precision(y_true: np.ndarray, scores: np.ndarray) -> float:
    """AP of ranking clips by ``scores`` against binary labels ``y_true`` (both (n,)), as the reference defines it.

    Clips with equal scores form one threshold. Walking thresholds from high to low score, each threshold that adds a
    positive contributes its interpolated precision (the best precision at that recall or higher), and AP is the
    mean of those contributions (one per threshold, however many positives it adds). All-negative labels give 0,
    all-positive labels 1.
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if np.all(y_true == y_true[0]):
        return 1.0 if y_true[0] else 0.0
    order = np.argsort(scores, kind="stable")[::-1]
    s, y = scores[order], y_true[order]
    last_of_group = np.append(np.flatnonzero(np.diff(s)), len(s) - 1)
    tps = np.cumsum(y)[last_of_group]
    fps = last_of_group + 1 - tps
    precision = tps / (tps + fps)
    recall = (tps / tps[-1]).astype(np.float32)
    # from the lowest threshold (highest recall) upwards: best precision at this recall or higher
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    previous_recall = np.concatenate([np.zeros(1, np.float32), recall[:-1]])
    adds_positive = recall != previous_recall
    return float(np.mean(envelope[adds_positive]))


def _fit_length(scores: np.ndarray, n_clips: int) -> np.ndarray:
    """Predicted clip scores cut or zero-padded to the ground truth's clip count (the reference's rule: feature
    extraction often yields one clip fewer than ``duration / clip_length``)."""
    if len(scores) >= n_clips:
        return scores[:n_clips]
    return np.concatenate([scores, np.zeros(n_clips - len(scores))])


def eval_highlight(predictions: list[dict], ground_truth: list[dict], clip_length: float = 2.0,
                   match_number: bool = True) -> dict:
    """``{"HL-min-Fair"|"HL-min-Good"|"HL-min-VeryGood": {"HL-mAP": .., "HL-Hit1": ..}}`` in percent.

    Needs ``pred_saliency_scores`` (one per clip) in every prediction and ``duration``, ``relevant_clip_ids``,
    ``saliency_scores`` in every ground-truth row.
    """
    pred, gt, qids = _matched(predictions, ground_truth, match_number)
    truth, ranked = {}, {}
    for q in qids:
        for key in ("duration", "relevant_clip_ids", "saliency_scores"):
            if key not in gt[q]:
                raise InputError(f"ground truth for qid {q!r} has no {key!r}; cannot evaluate highlight detection")
        if "pred_saliency_scores" not in pred[q]:
            raise InputError(f"prediction for qid {q!r} has no 'pred_saliency_scores'")
        truth[q] = clip_saliency(gt[q], clip_length)
        ranked[q] = np.asarray(pred[q]["pred_saliency_scores"], dtype=np.float64)
    out = {}
    for name, level in SALIENCY_LEVELS.items():
        hits, aps = [], []
        for q in qids:
            positive = truth[q] >= level  # (n_clips, annotators)
            top = int(np.argmax(ranked[q])) if len(ranked[q]) else -1
            hits.append(bool(positive[top].any()) if 0 <= top < len(positive) else False)
            scores = _fit_length(ranked[q], len(positive))
            aps.extend(ranking_average_precision(positive[:, a], scores) for a in range(positive.shape[1]))
        out[f"HL-min-{name}"] = {"HL-mAP": _pct(np.mean(aps)), "HL-Hit1": _pct(np.mean(hits))}
    return out


# -------------------------------------------------------------------------------------------------------------- all
def eval_submission(predictions: list[dict], ground_truth: list[dict], match_number: bool = True,
                    clip_length: float = 2.0) -> dict:
    """The reference's full metrics object: ``{"brief": {...}, "HL-min-*": ..., "full"/"long"/"middle"/"short": ...}``.

    MR metrics when the predictions carry ``pred_relevant_windows``; HL metrics when they carry
    ``pred_saliency_scores``. ``brief`` holds ``MR-full-mAP``, ``MR-full-mAP@0.5``, ``MR-full-mAP@0.75``,
    ``MR-{short,middle,long}-mAP``, ``MR-full-R1@0.5``, ``MR-full-R1@0.7`` (sorted by key), then
    ``HL-min-{level}-{mAP,Hit1}``.
    """
    if not predictions:
        raise InputError("no predictions")
    metrics: dict = {}
    brief: dict = {}
    if "pred_relevant_windows" in predictions[0]:
        mr = eval_moment_retrieval(predictions, ground_truth, match_number)
        metrics.update(mr)
        mr_brief = {"MR-full-mAP": mr["full"]["MR-mAP"]["average"],
                    "MR-full-mAP@0.5": mr["full"]["MR-mAP"]["0.5"],
                    "MR-full-mAP@0.75": mr["full"]["MR-mAP"]["0.75"],
                    "MR-full-R1@0.5": mr["full"]["MR-R1"]["0.5"],
                    "MR-full-R1@0.7": mr["full"]["MR-R1"]["0.7"]}
        for name in ("short", "middle", "long"):
            if name in mr:
                mr_brief[f"MR-{name}-mAP"] = mr[name]["MR-mAP"]["average"]
        brief.update(sorted(mr_brief.items()))
    if "pred_saliency_scores" in predictions[0]:
        hl = eval_highlight(predictions, ground_truth, clip_length, match_number)
        metrics.update(hl)
        for level, values in hl.items():
            for key, value in values.items():
                brief[f"{level}-{key.split('-', 1)[1]}"] = value
    return {"brief": brief, **dict(sorted(metrics.items()))}
