"""Read and write the Moment-DETR jsonl layout that the metrics (and the field's tools) consume.

One JSON object per line; times in seconds; spans ``[start, end)``.

Predictions
    ``{"qid": ..., "vid": ..., "pred_relevant_windows": [[start, end, score], ...]}`` best first; optionally
    ``"pred_saliency_scores": [float per clip]`` for highlight detection.
Ground truth
    ``{"qid": ..., "vid": ..., "duration": seconds, "relevant_windows": [[start, end], ...]}``; QVHighlights adds
    ``"relevant_clip_ids"`` and ``"saliency_scores"`` (one ``[a, b, c]`` annotator triple per listed clip).

``qid`` may be an int or a str but must be the same type in both files (``1`` and ``"1"`` are different ids).
Readers validate every row and raise :class:`vmr.errors.InputError` naming the file and line of a malformed one;
rows are returned as the dicts that were read (extra keys kept). Paths are :mod:`vmr.storage` URIs.
"""
from __future__ import annotations

import json
import math
from typing import Iterable

import numpy as np

from vmr import storage
from vmr.errors import InputError


def read_jsonl(uri: str) -> list[tuple[int, dict]]:
    """``(line_number, object)`` for every non-blank line of a jsonl file (line numbers from 1)."""
    try:
        text = storage.read_text(uri)
    except FileNotFoundError as e:
        raise InputError(f"{uri}: no such file") from e
    except UnicodeDecodeError as e:
        raise InputError(f"{uri}: not UTF-8 text ({e.reason})") from e
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{uri}:{n}: not valid JSON ({e.msg})") from e
        if not isinstance(obj, dict):
            raise InputError(f"{uri}:{n}: expected a JSON object, got {type(obj).__name__}")
        rows.append((n, obj))
    if not rows:
        raise InputError(f"{uri}: no rows")
    return rows


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_qid(where: str, row: dict, seen: dict) -> None:
    if "qid" not in row:
        raise InputError(f"{where}: missing 'qid'")
    qid = row["qid"]
    if not isinstance(qid, (int, str)) or isinstance(qid, bool):
        raise InputError(f"{where}: 'qid' must be an int or a string, got {qid!r}")
    if qid in seen:
        raise InputError(f"{where}: duplicate qid {qid!r} (first on line {seen[qid]})")


def _check_windows(where: str, key: str, windows, width: int) -> None:
    if not isinstance(windows, list):
        raise InputError(f"{where}: {key!r} must be a list of windows")
    for i, w in enumerate(windows):
        if not isinstance(w, list) or len(w) != width or not all(_is_number(x) for x in w):
            shape = "[start, end, score]" if width == 3 else "[start, end]"
            raise InputError(f"{where}: {key}[{i}] = {w!r} is not {shape} (finite numbers)")
        if w[1] < w[0]:
            raise InputError(f"{where}: {key}[{i}] = {w!r} ends before it starts")


def read_predictions(uri: str) -> list[dict]:
    """Prediction rows, validated: a unique ``qid``, ``pred_relevant_windows`` of ``[start, end, score]`` (may be
    empty), optional numeric ``pred_saliency_scores``."""
    out, seen = [], {}
    for n, row in read_jsonl(uri):
        where = f"{uri}:{n}"
        _check_qid(where, row, seen)
        if "pred_relevant_windows" not in row:
            raise InputError(f"{where}: missing 'pred_relevant_windows' (is this a ground-truth file?)")
        _check_windows(where, "pred_relevant_windows", row["pred_relevant_windows"], 3)
        if "pred_saliency_scores" in row:
            sal = row["pred_saliency_scores"]
            if not isinstance(sal, list) or not all(_is_number(x) for x in sal):
                raise InputError(f"{where}: 'pred_saliency_scores' must be a list of finite numbers")
        seen[row["qid"]] = n
        out.append(row)
    return out


def read_ground_truth(uri: str) -> list[dict]:
    """Ground-truth rows, validated: a unique ``qid``, ``relevant_windows`` of ``[start, end]``, a positive
    ``duration`` when present, and (when present) ``saliency_scores`` with one triple per ``relevant_clip_ids`` entry."""
    out, seen = [], {}
    for n, row in read_jsonl(uri):
        where = f"{uri}:{n}"
        _check_qid(where, row, seen)
        if "relevant_windows" not in row:
            hint = " (is this a predictions file?)" if "pred_relevant_windows" in row else ""
            raise InputError(f"{where}: missing 'relevant_windows'{hint}")
        _check_windows(where, "relevant_windows", row["relevant_windows"], 2)
        if "duration" in row and not (_is_number(row["duration"]) and row["duration"] > 0):
            raise InputError(f"{where}: 'duration' must be a positive number of seconds, got {row['duration']!r}")
        if "saliency_scores" in row or "relevant_clip_ids" in row:
            ids, sal = row.get("relevant_clip_ids"), row.get("saliency_scores")
            if not isinstance(ids, list) or not isinstance(sal, list) or len(ids) != len(sal):
                raise InputError(f"{where}: 'relevant_clip_ids' and 'saliency_scores' must be lists of equal length")
            if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
                raise InputError(f"{where}: 'relevant_clip_ids' must be non-negative integers")
            if not all(isinstance(s, list) and s and all(_is_number(x) for x in s) for s in sal):
                raise InputError(f"{where}: 'saliency_scores' must be a list of per-annotator score lists")
        seen[row["qid"]] = n
        out.append(row)
    return out


def _plain(x):
    """numpy scalars/arrays -> JSON-ready Python values."""
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def prediction_row(qid, vid: str, windows, **extra) -> dict:
    """One prediction row from a model's (K, 3) ``[start_s, end_s, score]`` array (best first)."""
    w = np.asarray(windows, dtype=np.float64).reshape(-1, 3)
    return {"qid": _plain(qid), "vid": vid, "pred_relevant_windows": w.tolist(), **_plain(extra)}


def write_jsonl(uri: str, rows: Iterable[dict]) -> None:
    """Write rows atomically (the file holds all rows or its previous content); numpy values are converted."""
    text = "".join(json.dumps(_plain(r)) + "\n" for r in rows)
    storage.write_text_atomic(uri, text)
