"""The training-free baseline every learned model must beat: cosine similarity between query and target frames.

Scoring (one query, one target; features are L2-normalised again here, zero rows stay zero):

1. ``S = target @ query.T`` (M, N): cosine similarity of every target row with every query row.
2. Candidate windows are row ranges ``[i, i + L)`` at every start ``i`` for a few lengths ``L``. By default the
   lengths are the query's duration times ``length_ratios`` (0.5x to 2x), converted to target rows; a moment of the
   same action rarely differs from the query by more. ``lengths_s`` replaces them with fixed lengths in seconds
   (e.g. for text queries, whose row count says nothing about duration).
3. A window's score is the symmetric Chamfer similarity between its rows and the query's rows::

       precision = mean over window rows i of  max_j S[i, j]     (every window frame looks like some query frame)
       recall    = mean over query rows j  of  max_{i in window} S[i, j]   (every query frame is found in the window)
       score     = (precision + recall) / 2                      in [-1, 1]

   Precision alone prefers short windows on the best-matching frames; recall alone prefers long windows that cover
   everything; their mean peaks on a window that contains the query's content and little else. Frame order is
   ignored on purpose: a query of the same action filmed elsewhere need not follow the same pace or order.
4. Greedy 1-D NMS (:func:`vmr.spans.nms_1d`) at ``nms_iou`` (0.5: the candidates are dense, shifted by one row, so a
   looser threshold would return near-copies of the best window), best first, ``top_k`` kept.

Windows are converted to seconds with :mod:`vmr.timeline` on the target's own timestamps (``[i, i + L)`` rows ->
``[start, end)`` seconds). The query's rows are assumed to be sampled every ``query_step`` seconds, by default the
target's ``step`` (both come from one feature store).

**The similarity run** (``method="run"``, the default): the same cosine, but the moment's length is decided by the
similarity curve instead of the query's length:

1. ``c_i = max_j cos(target_i - mu, query_j - mu)`` (M,): each target row against its best-matching query row, after
   subtracting ``mu``, the mean of the target's rows (rows L2-normalised after). Frames of one camera
   share most of their CLIP vector; the difference from the target's mean is what tells an event from the static
   scene (the same reason MATR centres its inputs, :mod:`vmr.models.matr`).
2. The threshold is the midpoint of ``max(c)`` and ``median(c)``: halfway between the best match and the typical
   background row, so it adapts to how much the query stands out from this target.
3. The moment is the maximal run of consecutive rows around the best row whose ``c`` stays at or above the threshold;
   its score is the run's mean ``c``. Further moments (``top_k`` > 1): the run's rows are set aside and the next best
   row grows its run the same way (a row below the threshold is a one-row moment).

Real moments are often much shorter or longer than the query (an event slowed down as a replay, a query clip cut a
little wider than the action), where windows of 0.5-2x the query's length cannot fit; the run follows the footage.
``method="windows"`` is the Chamfer-window baseline above, kept for comparison and used for text queries with fixed
``lengths_s``. Both are measured side by side in ``benchmarks/real_footage.py`` (benchmarks/RESULTS.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vmr import timeline
from vmr.spans import nms_1d


@dataclass
class CosineBaselineConfig:
    method: str = "run"  # "run": moment = the similarity run around the best row; "windows": Chamfer windows
    length_ratios: tuple[float, ...] = (0.5, 0.625, 0.75, 0.875, 1.0, 1.25, 1.5, 1.75, 2.0)
    lengths_s: tuple[float, ...] | None = None  # fixed window lengths in seconds instead of ratios of the query
    nms_iou: float = 0.5


def _window_lengths(n_query: int, m_target: int, target_step: float, query_step: float,
                    cfg: CosineBaselineConfig) -> list[int]:
    """Candidate window lengths in target rows, each in [1, m_target], without duplicates."""
    if cfg.lengths_s:
        rows = [s / target_step for s in cfg.lengths_s]
    else:
        rows = [r * n_query * query_step / target_step for r in cfg.length_ratios]
    return sorted({int(min(max(round(r), 1), m_target)) for r in rows})


def similarity_curves(target: torch.Tensor, query: torch.Tensor, tmask: torch.Tensor, qmask: torch.Tensor) -> torch.Tensor:
    """(B, M) the run method's curve for a padded batch: target rows (B, M, D) and query rows (B, N, D), real rows where
    ``tmask`` (B, M) / ``qmask`` (B, N) are True. The mean of the target's real rows is subtracted from target and
    query rows (store rows are unit vectors already; a vector added to every row changes nothing) and they are
    L2-normalised; ``c_i`` is then the cosine of target row i with its best-matching query row. Padded rows are 0."""
    t = target * tmask[..., None]
    q = query
    mean = t.sum(1, keepdim=True) / tmask.sum(1).clamp(min=1)[:, None, None]
    t = F.normalize(t - mean, dim=-1)
    q = F.normalize(q - mean, dim=-1)
    sim = (t @ q.transpose(1, 2)).masked_fill(~qmask[:, None, :], -2.0)  # (B, M, N)
    return sim.max(2).values * tmask


def similarity_curve(query: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(M,) :func:`similarity_curves` of one query (N, D) and one target (M, D), all rows real."""
    ones = torch.ones
    return similarity_curves(target.float()[None], query.float()[None], ones(1, len(target), dtype=torch.bool),
                             ones(1, len(query), dtype=torch.bool))[0]


def similarity_runs(curve: np.ndarray, top_k: int | None) -> list[tuple[int, int, float]]:
    """Moments of a similarity curve (M,) as row ranges ``(s, e, score)``, ``[s, e)``, best first (module doc):
    the run around the best remaining row whose value stays >= the midpoint of the curve's max and median."""
    c = np.asarray(curve, dtype=np.float64)
    m = len(c)
    if m == 0:
        return []
    threshold = 0.5 * (float(c.max()) + float(np.median(c)))
    free = np.ones(m, dtype=bool)
    out: list[tuple[int, int, float]] = []
    while free.any() and (top_k is None or len(out) < top_k):
        best = int(np.flatnonzero(free)[np.argmax(c[free])])
        floor = min(threshold, float(c[best]))
        s = best
        while s > 0 and free[s - 1] and c[s - 1] >= floor:
            s -= 1
        e = best + 1
        while e < m and free[e] and c[e] >= floor:
            e += 1
        out.append((s, e, float(c[s:e].mean())))
        free[s:e] = False
    return out


def window_scores(query: torch.Tensor, target: torch.Tensor, lengths: list[int]) -> dict[int, torch.Tensor]:
    """Chamfer score (see module doc) of every window: ``{L: (M - L + 1,) scores of windows [i, i + L)}``.

    ``query`` (N, D), ``target`` (M, D): real rows only (no padding).
    """
    sim = F.normalize(target.float(), dim=-1) @ F.normalize(query.float(), dim=-1).T  # (M, N)
    row_best = sim.max(dim=1).values  # (M,) best query match of each target row
    cum = torch.cat([row_best.new_zeros(1), row_best.double().cumsum(0)])
    out = {}
    for L in lengths:
        precision = ((cum[L:] - cum[:-L]) / L).float()  # (M - L + 1,)
        recall = F.max_pool1d(sim.T[None], kernel_size=L, stride=1)[0].mean(0)  # (M - L + 1,)
        out[L] = (precision + recall) / 2
    return out


class CosineBaseline(torch.nn.Module):
    """Training-free moment localiser with the models' ``predict`` output: (K, 3) ``[start_s, end_s, score]``, best
    first. It has no parameters; it is a Module only so that evaluation code treats it like a model
    (``.to()``, ``.eval()``, ``out = m(batch)``, ``m.predict(out, batch, top_k)``)."""

    kind = "cosine"

    def __init__(self, config: CosineBaselineConfig | None = None):
        super().__init__()
        self.config = config or CosineBaselineConfig()

    @torch.no_grad()
    def localize(self, query, target, target_times, step: float, top_k: int | None = 5,
                 query_step: float | None = None) -> np.ndarray:
        """One query (N, D) in one target (M, D) with row timestamps ``target_times`` (M,) seconds and ``step``
        seconds per row -> (K, 3) float64 ``[start_s, end_s, score]``, best first, K <= top_k."""
        query = torch.as_tensor(np.asarray(query) if not torch.is_tensor(query) else query)
        target = torch.as_tensor(np.asarray(target) if not torch.is_tensor(target) else target)
        times = np.asarray(target_times.cpu() if torch.is_tensor(target_times) else target_times, dtype=np.float64)
        if query.ndim != 2 or target.ndim != 2 or query.shape[1] != target.shape[1]:
            raise ValueError(f"query (N, D) and target (M, D) must share D; got {tuple(query.shape)} and "
                             f"{tuple(target.shape)}")
        if len(times) != len(target):
            raise ValueError(f"{len(times)} timestamps for {len(target)} target rows")
        m, n = len(target), len(query)
        if m == 0 or n == 0:
            return np.zeros((0, 3))
        step = float(step)
        if self.config.method == "run" and not self.config.lengths_s:
            runs = similarity_runs(similarity_curve(query, target).double().cpu().numpy(), top_k)
            rows = np.array([[s, e] for s, e, _ in runs], dtype=np.float64)
            sec = timeline.position_to_seconds(times, step, rows)
            return np.concatenate([sec, np.array([[x] for _, _, x in runs])], axis=1)
        if self.config.method not in ("run", "windows"):
            raise ValueError(f"CosineBaselineConfig.method must be 'run' or 'windows', got {self.config.method!r}")
        lengths = _window_lengths(n, m, step, float(query_step or step), self.config)
        scores = window_scores(query, target, lengths)
        starts = np.concatenate([np.arange(m - L + 1) for L in lengths])
        ends = np.concatenate([np.arange(m - L + 1) + L for L in lengths])
        values = torch.cat([scores[L] for L in lengths]).double().cpu().numpy()
        sec = timeline.position_to_seconds(times, step, np.stack([starts, ends], axis=1))
        return nms_1d(np.concatenate([sec, values[:, None]], axis=1), self.config.nms_iou, top_k)

    @torch.no_grad()
    def predict_batch(self, batch: dict, top_k: int | None = 5) -> list[np.ndarray]:
        """Per item of a :func:`vmr.data.samples.collate` batch, (K, 3) ``[start_s, end_s, score]`` on its
        ``target_times`` clock, best first; padding rows (``query_mask``/``target_mask`` False) are ignored.
        An optional ``batch["query_step"]`` (B,) gives the query's seconds per row (default: the target's)."""
        results = []
        query_steps = batch.get("query_step")
        for b in range(len(batch["query"])):
            qm, tm = batch["query_mask"][b].bool(), batch["target_mask"][b].bool()
            results.append(self.localize(
                batch["query"][b][qm], batch["target"][b][tm], batch["target_times"][b][tm],
                float(batch["step"][b]), top_k,
                query_step=float(query_steps[b]) if query_steps is not None else None))
        return results

    def forward(self, batch: dict) -> dict:
        """Nothing to compute ahead of :meth:`predict` (kept for the model interface)."""
        return {}

    def predict(self, out: dict, batch: dict, top_k: int = 5) -> list[np.ndarray]:
        """The model interface's ``predict``: same as :meth:`predict_batch`."""
        return self.predict_batch(batch, top_k)
