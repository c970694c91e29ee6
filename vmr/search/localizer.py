"""Find moments with a trained model or the cosine baseline: in one target video (:meth:`Localizer.localize`) or in
every video of a feature store (:meth:`Localizer.search`). The Python face of ``vmr localize`` and ``vmr search``.

Inputs:

- **model**: ``"baseline"`` (:class:`vmr.models.baseline.CosineBaseline`, training-free), a checkpoint path or storage URI,
  an MLflow model URI (``models:/vmr-matr@champion``, ``models:/vmr-matr/latest``, ``runs:/<id>/model``; all through
  :func:`vmr.models.checkpoint.load_model`), or an in-memory model with its :class:`~vmr.models.checkpoint.ModelCard` (``card=``)
  or the feature settings it was trained on (``features=``).
- **query**: a video clip (path or storage URI) whose sampled frames are embedded here with the model's feature
  settings (CLIP model, weights, samples per second; random weights are seeded as in extraction, so they agree across
  processes), or precomputed features (N, D) one row per ``1/fps`` seconds, or ``text=`` a sentence (CLIP sentence
  embedding, (1, D), as the text-query models are trained).
- **target**: a video id of the feature store (``store_uri``), a video file (path or URI: its stored features are
  used when the store holds that very file (same source URI, size and etag), otherwise it is extracted in this
  process and not written to the store; ``vmr extract`` it to make later calls instant), or
  :class:`vmr.features.store.VideoFeatures`.

Every feature source is checked against the model's feature settings (:func:`vmr.models.checkpoint.check_features`).

Long targets (a 90-minute match): the models are trained on targets of a few minutes (``build_match_pairs`` draws
60-180 s windows; the Ray datasets crop to ``max_target`` rows), their attention (MATR) or M x M map (A2FA) grows
quadratically, and they have never seen a whole match at once. So the target is cut into **sliding windows** of
``window_s`` seconds overlapping by ``overlap_s``:

- Default ``window_s``: the training length recorded in the model card (``extra["window_s"]`` in seconds, or
  ``extra["max_target"]`` rows at the card's fps), else ``DEFAULT_WINDOW_S`` = 180 s, the longest target the pair
  builder draws. Default ``overlap_s``: half the window. A window holds at least twice the query's rows (a long query
  keeps room around it), and never more than the target. The last window is aligned to the end of the target, so all
  windows of a long target have one length (one batch shape, and no short tail window unlike anything trained on).
- Windows keep the source video's timestamps, so predictions come out on the video's clock with no shifting.
- **Merging**: each window *owns* the core of its rows: the boundary between two neighbouring windows is the middle
  of their overlap, so the cores tile the video. A window's predictions (its best ``window_top_k``) are kept only
  when their centre lies in its core. Every moment is thus reported by the one window whose core holds its centre,
  and a moment up to ``overlap_s`` long is seen whole by that window (its centre is at least half the overlap away
  from the window's inner edges), while the partial views that other windows have of it (cut by their edges) are
  dropped instead of competing with it. Greedy 1-D NMS (:func:`vmr.spans.nms_1d`) at the model's own ``nms_iou``
  then removes near-duplicates of neighbouring windows, and the best ``top_k`` remain.
- Windows run in batches of ``batch_windows`` (one forward pass each), packed across videos by :meth:`search`.

The baseline is training-free and length-agnostic, so by default it scores the whole target at once (no windows);
give ``window_s`` to window it too. For text queries it scores fixed lengths ``BASELINE_TEXT_LENGTHS_S`` (a sentence
says nothing about duration).

Score timeline (:class:`Localization`, for ``--plot``): per target row, the model's evidence that the row is part of
the moment, taken from the window that owns the row: MATR's foreground probability; A2FA's best vertex score
``P[i, j]`` over the cells with ``i <= row <= j``; the baseline's cosine similarity of the row to its best-matching
query row.

Search (:meth:`search`): every video of a store, windows of several videos packed into the same batches, each video
merged as above, the best ``top_k`` moments over all videos, in this process. When the store has a vector index
(:mod:`vmr.search.index`, ``vmr index build``) :meth:`search` and :meth:`localize` run the two-stage search instead
(:mod:`vmr.search.two_stage`: the index shortlists spans, the model re-ranks only those); ``exact=True`` keeps the
exhaustive path, ``exact=False`` insists on the index. Videos shorter than the query are
skipped. :meth:`plan_search` checks a search and embeds its query once; :mod:`vmr.pipeline.search` runs such a plan on
Ray Data for large stores (the ``vmr search`` command picks the path).

(One module over 450 lines: :class:`Localizer` is one idea, loading a model and its features, windowing, batching and
merging, whose steps share its state; windows and result types live in :mod:`vmr.search.windows` and
:mod:`vmr.search.results`.)
"""
from __future__ import annotations

import functools
import logging
import math
import os
import posixpath
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

from vmr import storage
from vmr.errors import ConfigError, InputError
from vmr.search.results import Localization, Moment, QueryFeatures, SearchHit, SearchPlan, SearchResult
from vmr.search.windows import WindowItem, plan_windows, window_cores, window_items
from vmr.spans import nms_1d

log = logging.getLogger(__name__)

DEFAULT_WINDOW_S = 180.0  # the longest target window vmr.data.match_pairs.build_match_pairs draws for training
DEFAULT_BATCH_WINDOWS = 8  # windows per forward pass
BASELINE_TEXT_LENGTHS_S = (4.0, 8.0, 16.0, 32.0, 64.0)  # the cosine baseline's window lengths for a sentence


# ---- score curves -------------------------------------------------------------------------------------------------


def _row_curves(out: dict, batch: dict) -> tuple[list[np.ndarray] | None, str]:
    """Per item of a batch, the per-row evidence of the model (see the module docstring) and its label; None for a
    model whose output has neither foreground logits nor a vertex map."""
    n_rows = batch["target_mask"].sum(1).cpu().numpy()
    if "fg_logits" in out:
        p = torch.sigmoid(out["fg_logits"].float()).cpu().numpy()
        return [p[b, : int(n)] for b, n in enumerate(n_rows)], "foreground probability"
    if "vertex" in out:
        curves = []
        for b, n in enumerate(n_rows):
            n = int(n)
            v = out["vertex"][b, :n, :n].float()
            best_from = torch.flip(torch.cummax(torch.flip(v, dims=[1]), dim=1).values, dims=[1])  # max_{j>=r} P[i,j]
            below = torch.ones(n, n, dtype=torch.bool, device=v.device).tril(-1)  # cells with i > r
            curves.append(best_from.masked_fill(below, -math.inf).max(dim=0).values.cpu().numpy())
        return curves, "best moment score covering the row"
    return None, ""


def _baseline_curves(batch: dict) -> list[np.ndarray]:
    """Per item, the cosine similarity of each real target row to its best-matching query row."""
    out = []
    for b in range(len(batch["target"])):
        t = batch["target"][b][batch["target_mask"][b]].float()
        q = batch["query"][b][batch["query_mask"][b]].float()
        sim = torch.nn.functional.normalize(t, dim=-1) @ torch.nn.functional.normalize(q, dim=-1).T
        out.append(sim.max(dim=1).values.cpu().numpy())
    return out


# ---- the localizer ------------------------------------------------------------------------------------------------


def default_feature_settings():
    """The default feature settings (those of ``vmr extract``, :mod:`vmr.features.settings`): used for the baseline
    when neither a model card nor a feature store says otherwise."""
    from vmr.features.settings import FeatureSettings

    return FeatureSettings()


def _check_video_uri(uri: str, what: str) -> str:
    """``uri`` exists and has a video extension; InputError (one line) otherwise."""
    from vmr.features.video import VIDEO_EXTENSIONS

    uri = os.fspath(uri)
    try:
        found = storage.exists(uri)
    except Exception as e:  # noqa: BLE001 - unreachable object store, bad bucket name, ...
        raise InputError(f"{what} {uri}: cannot be read ({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
    if not found:
        raise InputError(f"{what} not found: {uri}")
    ext = posixpath.splitext(storage.strip(uri))[1].lower()
    if ext not in VIDEO_EXTENSIONS:
        raise InputError(f"{what} {uri}: unsupported format {ext or '(no extension)'!r}; vmr reads "
                         f"{', '.join(VIDEO_EXTENSIONS)} videos")
    return uri


class Localizer:
    """Find moments with one model (see the module docstring).

    ``model``: ``"baseline"``, a checkpoint path/URI, an MLflow model URI, or an ``nn.Module`` (then ``card`` or
    ``features`` say what features it was trained on; without either, the features it is given are trusted).
    ``store_uri``: the feature store holding targets (optional for :meth:`localize`; the corpus of :meth:`search`
    when that is given none). ``device``: torch device (default CUDA when available). ``window_s``/``overlap_s``:
    sliding windows in seconds (defaults in the module docstring). ``batch_windows``: windows per forward pass.
    ``window_top_k``: predictions kept per window before merging (default ``max(2 * top_k, 10)``). ``seed``: seed
    of random CLIP weights (``pretrained="none"``), as in ``vmr extract``.
    """

    def __init__(self, model: Any = "baseline", store_uri: str | None = None, device: str | None = None,
                 window_s: float | None = None, overlap_s: float | None = None, *, card=None, features: Any = None,
                 batch_windows: int = DEFAULT_BATCH_WINDOWS, window_top_k: int | None = None, seed: int = 0):
        from vmr.features.settings import FeatureSettings
        from vmr.models.checkpoint import load_model, task_of

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.store_uri = store_uri
        self._stores: dict = {}
        self.seed = seed
        self.batch_windows = max(1, int(batch_windows))
        self.window_top_k = window_top_k
        if window_s is not None and not window_s > 0:
            raise ConfigError(f"the window must be a positive number of seconds, got {window_s}")
        if overlap_s is not None and not (overlap_s >= 0 and (window_s is None or overlap_s < window_s)):
            raise ConfigError(f"the overlap must be >= 0 and shorter than the window ({window_s} s), got {overlap_s}")
        self.window_s, self.overlap_s = window_s, overlap_s
        self.card = card
        self.source = model if isinstance(model, str) else type(model).__name__
        if isinstance(model, str) and model == "baseline":
            from vmr.models.baseline import CosineBaseline

            model = CosineBaseline()
        if isinstance(model, (str, os.PathLike)):
            self.model, self.card = load_model(os.fspath(model), device=self.device)
            self.source = os.fspath(model)
        elif isinstance(model, torch.nn.Module):
            self.model = model.to(self.device).eval()
        else:
            raise ConfigError(f"model must be 'baseline', a checkpoint path/URI or an nn.Module, got {type(model)}")
        kind = self.card.kind if self.card is not None else getattr(self.model, "kind", type(self.model).__name__)
        self.kind = "baseline" if kind == "cosine" else str(kind).lower()
        self.task = "any" if self.kind == "baseline" else (self.card.task if self.card is not None else task_of(self.kind))
        if self.card is not None:
            self.features = FeatureSettings.of(self.card)
        else:
            self.features = FeatureSettings.of(features) if features is not None else None
        self._encoders: dict = {}
        self._text_baseline = None
        self._indexes: dict = {}

    def __repr__(self) -> str:
        return f"Localizer({self.kind} from {self.source}, store={self.store_uri!r}, device={self.device})"

    # -- settings -------------------------------------------------------------------------------------------------
    def _store(self, uri: str | None):
        if not uri:
            return None
        if uri not in self._stores:
            from vmr.features.store import FeatureStore

            self._stores[uri] = FeatureStore(uri)
        return self._stores[uri]

    @property
    def store(self):
        """The :class:`vmr.features.store.FeatureStore` at ``store_uri`` (None without one)."""
        return self._store(self.store_uri)

    def _nms_iou(self) -> float:
        iou = getattr(getattr(self.model, "config", None), "nms_iou", 0.7)
        return 1.0 if iou is None else float(iou)

    def window_seconds(self, step: float) -> float | None:
        """The window length in seconds for features of ``step`` seconds per row (None = the whole target)."""
        if self.window_s is not None:
            return float(self.window_s)
        if self.kind == "baseline":
            return None
        extra = self.card.extra if self.card is not None else {}
        if extra.get("window_s"):
            return float(extra["window_s"])
        if extra.get("max_target"):
            return float(extra["max_target"]) * float(step)
        return DEFAULT_WINDOW_S

    def _window_rows(self, step: float, query_rows: int) -> tuple[int | None, int]:
        """(window rows or None for no windows, overlap rows) for targets of ``step`` seconds per row."""
        w = self.window_seconds(step)
        if w is None:
            return None, 0
        rows = max(int(round(w / step)), 2 * int(query_rows), 1)
        overlap_s = self.overlap_s if self.overlap_s is not None else rows * step / 2.0
        return rows, min(int(round(overlap_s / step)), rows - 1)

    def _check(self, settings, what: str) -> None:
        """Refuse features made otherwise than the model's (FeatureMismatchError, one line)."""
        if self.features is not None:
            from vmr.models.checkpoint import check_features

            check_features(self.card if self.card is not None else self.features, settings, what=what)

    def encoder(self, settings):
        """The CLIP encoder for ``settings`` (a FeatureSettings), shared by the Localizers of this process."""
        enc = _encoder(settings.model, settings.pretrained, str(self.device), self.seed)
        self._encoders[(settings.model, settings.pretrained)] = enc
        return enc

    def notices(self) -> list[str]:
        """Warnings meant for the user: the random-weights notice of any CLIP encoder used so far."""
        return [e.notice() for e in self._encoders.values() if e.notice()]

    def _extract(self, uri: str, settings, what: str):
        """Extract a video with ``settings`` (after checking they are what the model needs) -> VideoFeatures."""
        from vmr.features.extraction import extract_video
        from vmr.features.settings import EXTRACTOR_VERSION, FeatureSettings
        from vmr.models.checkpoint import check_features

        made = FeatureSettings(settings.model, settings.pretrained, settings.fps, EXTRACTOR_VERSION, settings.dim)
        check_features(settings, made, what=f"a {what} extracted now")  # e.g. the model was trained on imported npz
        vf = extract_video(uri, self.encoder(settings), settings.fps)
        if settings.dim and vf.features.shape[1] != settings.dim:
            raise InputError(f"{what} {uri}: extracted {vf.features.shape[1]}-d features, the model takes {settings.dim}-d")
        return vf

    # -- targets and queries --------------------------------------------------------------------------------------
    def target_features(self, target: Any, store_uri: str | None = None):
        """The target's :class:`vmr.features.store.VideoFeatures`: ``target`` is a video id of the store, a video file
        (path/URI; the store's copy of that very file is used when current, else it is extracted here), or
        VideoFeatures. Feature settings are checked against the model's."""
        from vmr.features.store import VideoFeatures

        store = self._store(store_uri) if store_uri else self.store
        if isinstance(target, VideoFeatures):
            self._check(target.entry, f"target {target.video_id}")
            return target
        target = os.fspath(target)
        if store is not None and _in_store(store, target):
            vf = store.load(target)
            self._check(vf.entry, f"target {target!r} in the feature store {store.uri}")
            return vf
        if store is not None and not _exists(target):
            raise InputError(f"target {target!r} is neither a video in the feature store {store.uri} "
                             f"({len(store)} videos) nor a video file")
        uri = _check_video_uri(target, "target video")
        if store is not None:
            stored = _stored_copy(store, uri)
            if stored is not None:
                vf = store.load(stored)
                self._check(vf.entry, f"target {stored!r} in the feature store {store.uri}")
                return vf
        settings = self.features
        if settings is None:
            settings = self._store_settings(store) if store is not None else None
        if settings is None:
            settings = default_feature_settings()
        return self._extract(uri, settings, "target video")

    def _store_settings(self, store):
        from vmr.features.settings import FeatureSettings

        return FeatureSettings.of(store) if len(store) else None

    def query_features(self, query: Any = None, text: str | None = None, settings=None) -> QueryFeatures:
        """A :class:`QueryFeatures` from a video clip (path/URI), precomputed features (N, D) (or a QueryFeatures /
        VideoFeatures), or ``text``. Video clips and sentences are embedded with ``settings`` (the model's, else
        the target's / store's, else :func:`default_feature_settings`)."""
        from vmr.features.store import VideoFeatures

        if (query is None) == (text is None):
            raise InputError("give either a query clip or a text query (exactly one)")
        settings = self.features or settings or default_feature_settings()
        if text is not None:
            text = str(text).strip()
            if not text:
                raise InputError("the text query is empty")
            self._check_task("text")
            emb = self.encoder(settings).encode_text([text])
            return QueryFeatures(np.asarray(emb, np.float32), "text", None, text, text=text)
        if isinstance(query, QueryFeatures):  # prepared before (e.g. precomputed sentence features, kind "text")
            self._check_task(query.kind)
            return query
        self._check_task("video")
        if isinstance(query, VideoFeatures):
            self._check(query.entry, f"query {query.video_id}")
            return QueryFeatures(np.asarray(query.features, np.float32), "video", query.step, query.video_id,
                                 uri=query.entry.get("source_uri"))
        if isinstance(query, (str, os.PathLike)):
            uri = _check_video_uri(os.fspath(query), "query clip")
            vf = self._extract(uri, settings, "query clip")
            return QueryFeatures(vf.features, "video", 1.0 / float(settings.fps), uri, uri=uri)
        arr = np.asarray(query.detach().cpu() if torch.is_tensor(query) else query, dtype=np.float32)
        if arr.ndim != 2 or len(arr) == 0:
            raise InputError(f"query features must be a non-empty (N, D) array, got shape {arr.shape}")
        return QueryFeatures(arr, "video", 1.0 / float(settings.fps), "features")

    def _check_task(self, kind: str) -> None:
        if self.task not in ("any", kind):
            wanted = "a video clip (--query CLIP)" if self.task == "video" else "a sentence (--text ...)"
            raise InputError(f"the {self.kind} model from {self.source} takes {wanted} as its query, not a {kind} query")

    # -- running --------------------------------------------------------------------------------------------------
    def _model_for(self, q: QueryFeatures):
        if self.kind == "baseline" and q.kind == "text":
            if self._text_baseline is None:
                from vmr.models.baseline import CosineBaseline, CosineBaselineConfig

                cfg = getattr(self.model, "config", None) or CosineBaselineConfig()
                self._text_baseline = CosineBaseline(CosineBaselineConfig(
                    length_ratios=cfg.length_ratios, lengths_s=BASELINE_TEXT_LENGTHS_S, nms_iou=cfg.nms_iou))
            return self._text_baseline
        return self.model

    def _items_for(self, key: str, vf, q: QueryFeatures) -> list[WindowItem]:
        step = float(vf.step)
        rows, overlap = self._window_rows(step, len(q.features) if q.kind == "video" else 0)
        return window_items(key, np.asarray(vf.features, np.float32), np.asarray(vf.timestamps, np.float64), step,
                             rows, overlap)

    def _run(self, q: QueryFeatures, items: Iterable[WindowItem], per_window_k: int,
             curves: bool = False) -> Iterator[tuple[WindowItem, np.ndarray, np.ndarray | None, str]]:
        """Run windows in batches; per window yield (item, owned candidates (K, 3) seconds, per-row curve, label)."""
        buf: list[WindowItem] = []
        for it in items:
            buf.append(it)
            if len(buf) >= self.batch_windows:
                yield from self._run_batch(q, buf, per_window_k, curves)
                buf = []
        if buf:
            yield from self._run_batch(q, buf, per_window_k, curves)

    def _run_batch(self, q: QueryFeatures, items: list[WindowItem], per_window_k: int, curves: bool):
        from vmr.data.samples import Sample, collate

        samples = [Sample(sample_id=f"{it.key}@{it.rows[0]}", target_id=it.key, target=it.target,
                          target_times=it.times, step=it.step, query=q.features, query_kind=q.kind) for it in items]
        batch = collate(samples)
        if q.kind == "video" and q.step:
            batch["query_step"] = torch.full((len(items),), float(q.step), dtype=torch.float64)
        model = self._model_for(q)
        with torch.inference_mode():
            out = model(batch)
            preds = model.predict(out, batch, top_k=per_window_k)
            row_curves, label = (None, "")
            if curves:
                row_curves, label = ((_baseline_curves(batch), "cosine similarity to the query")
                                     if self.kind == "baseline" else _row_curves(out, batch))
        for b, it in enumerate(items):
            p = np.asarray(preds[b], dtype=np.float64).reshape(-1, 3)
            centre = (p[:, 0] + p[:, 1]) / 2.0
            owned = p[(centre >= it.core_s[0]) & (centre < it.core_s[1])]
            yield it, owned, (row_curves[b] if row_curves is not None else None), label

    def _merge(self, candidates: list[np.ndarray], top_k: int) -> np.ndarray:
        allc = np.concatenate(candidates) if candidates else np.zeros((0, 3))
        return nms_1d(allc, self._nms_iou(), top_k) if len(allc) else allc

    def _per_window_k(self, top_k: int) -> int:
        return int(self.window_top_k or max(2 * top_k, 10))

    @staticmethod
    def _check_length(q: QueryFeatures, vf) -> None:
        target_s = float(vf.entry.get("duration") or len(vf.features) * vf.step)
        if q.kind == "video" and q.duration > target_s + 1e-6:
            raise InputError(f"the query ({q.duration:.1f} s) is longer than the target {vf.video_id!r} "
                             f"({target_s:.1f} s): the target cannot contain it")

    # -- public API -----------------------------------------------------------------------------------------------
    def localize(self, target: Any, query: Any = None, *, text: str | None = None, top_k: int = 5,
                 exact: bool | None = None) -> list[Moment]:
        """The ``top_k`` best moments of the query in ``target``, best first, in seconds on the target's clock.
        ``target``: a video id of the store, a video file (path/URI) or VideoFeatures; ``query``: a clip
        (path/URI) or features (N, D); or ``text``: a sentence. ``exact``: see :meth:`localize_details`."""
        return self.localize_details(target, query, text=text, top_k=top_k, curve=False, exact=exact).moments

    def localize_details(self, target: Any, query: Any = None, *, text: str | None = None, top_k: int = 5,
                         curve: bool = True, exact: bool | None = None) -> Localization:
        """:meth:`localize` with the score timeline and the windows (see :class:`Localization`). A target held
        by a store with a vector index is localised in two stages (the index shortlists spans of it, the model
        re-ranks them; no score timeline) unless ``exact`` is True or ``curve`` is asked for; ``exact=False``
        insists on the index. ``.path`` says which ran (``"index"`` or ``"exact"``)."""
        if top_k < 1:
            raise InputError(f"top-k must be >= 1, got {top_k}")
        if query is None and text is None:
            raise InputError("give either a query clip or a text query (exactly one)")
        self._check_task(_query_kind(query, text))  # before any extraction
        vf = self.target_features(target)
        q = self.query_features(query, text, settings=_settings_of(vf.entry))
        if q.features.shape[1] != vf.features.shape[1]:
            raise InputError(f"the query has {q.features.shape[1]}-d features, the target {vf.video_id!r} "
                             f"{vf.features.shape[1]}-d")
        self._check_length(q, vf)
        n = len(vf.features)
        store = self.store
        in_store = store is not None and vf.entry.get("video_id") == vf.video_id and vf.video_id in store
        if exact is False and not in_store:
            raise InputError(f"target {vf.video_id!r} is not a video of an indexed feature store: the index path "
                             "needs --store with a vector index")
        if not exact and not curve and in_store:
            index = self.index_for(store.uri, required=exact is False)
            if index is not None:
                from vmr.search import two_stage

                n_spans = max(2 * top_k, 10)
                nb = index.search(q.features, two_stage.default_neighbours(n_spans, n), video_id=vf.video_id)
                spans = two_stage.shortlist(nb, len(q.features), n_spans, self._span_rows(q, float(vf.step)))
                hits = self.search_ranges(q, store.uri, {vf.video_id: spans}, top_k, loaded={vf.video_id: vf})
                moments = [Moment(h.start, h.end, h.score) for h in hits]
                uri = str(vf.entry.get("source_uri") or "") or None
                duration = float(vf.entry.get("duration") or n * vf.step)
                windows = [(float(vf.timestamps[sp.start]), float(vf.timestamps[min(sp.end, n) - 1] + vf.step))
                           for sp in spans]
                return Localization(vf.video_id, moments, np.asarray(vf.timestamps, np.float64), None, "", windows,
                                    duration, uri, q, step=float(vf.step), path="index")
        items = self._items_for(vf.video_id, vf, q)
        full_curve = np.full(n, np.nan) if curve else None
        label, cands = "", []
        for it, owned, c, lab in self._run(q, items, self._per_window_k(top_k), curves=curve):
            cands.append(owned)
            if c is not None and full_curve is not None:
                label = lab
                centres = np.arange(it.rows[0], it.rows[1]) + 0.5
                mine = (centres >= it.core_rows[0]) & (centres < it.core_rows[1])
                full_curve[it.rows[0]:it.rows[1]][mine] = c[: it.rows[1] - it.rows[0]][mine]
        merged = self._merge(cands, top_k)
        moments = [Moment(float(s), float(e), float(x)) for s, e, x in merged]
        windows = [(float(it.times[0]), float(it.times[-1] + it.step)) for it in items]
        uri = str(vf.entry.get("source_uri") or "") or None
        duration = float(vf.entry.get("duration") or n * vf.step)
        return Localization(vf.video_id, moments, np.asarray(vf.timestamps, np.float64),
                            full_curve if full_curve is not None and label else None, label, windows, duration, uri, q,
                            step=float(vf.step))

    def search(self, query: Any = None, corpus: str | None = None, top_k: int = 10, *, text: str | None = None,
               progress: Callable[[str], None] | None = None, exact: bool | None = None) -> list[SearchHit]:
        """The ``top_k`` best moments over every video of the feature store ``corpus`` (default ``store_uri``),
        best first, computed in this process: in two stages when the store has a vector index (unless ``exact``),
        else exhaustively. ``progress(str)`` receives progress lines. (The ``vmr search`` command sends exhaustive
        searches of many hours to Ray Data instead: :func:`vmr.pipeline.search.search_store`.)"""
        return self.search_details(query, corpus, top_k, text=text, progress=progress, exact=exact).hits

    def search_details(self, query: Any = None, corpus: str | None = None, top_k: int = 10, *,
                       text: str | None = None, progress: Callable[[str], None] | None = None,
                       exact: bool | None = None) -> SearchResult:
        """:meth:`search` with what was searched and skipped (:class:`SearchResult`; ``.path`` is ``"index"`` or
        ``"exact"``). ``exact``: None = the index when the store has one, True = every window of every video,
        False = the index or an InputError."""
        plan = self.plan_search(query, corpus, top_k, text=text)
        indexed = self.search_planned_with_index(plan, top_k, exact=exact, progress=progress)
        if indexed is not None:
            return indexed
        if progress:
            progress(plan.describe(self.kind))
        hits = self.search_videos(plan.query, plan.store_uri, plan.video_ids, top_k, progress=progress)
        return plan.result(hits, on_ray=False)

    # -- the two-stage path -------------------------------------------------------------------------------------
    def search_planned_with_index(self, plan: SearchPlan, top_k: int, *, exact: bool | None = None,
                                  progress: Callable[[str], None] | None = None) -> SearchResult | None:
        """The two-stage search of ``plan`` when its store has a vector index and ``exact`` is not True
        (``exact=False`` insists on an index: InputError without one); None when the search must be exhaustive."""
        if exact:
            return None
        index = self.index_for(plan.store_uri, required=exact is False, entries=plan.entries or None)
        if index is None:
            return None
        if progress:
            progress(plan.describe(self.kind, " through its vector index"))
        return self.search_indexed(plan, top_k, index=index)

    def index_for(self, store_uri: str, required: bool = False, entries: dict[str, dict] | None = None):
        """The store's :class:`vmr.search.index.LoadedIndex`, checked against its current entries (kept in this
        Localizer while the store's index pointer is unchanged); None when the store has none (InputError instead
        when ``required``). InputError for a stale index or one made from other feature settings. ``entries``: the
        store's manifest entries when the caller has listed them already."""
        from vmr.search.index import VectorIndex

        vi = VectorIndex(self._store(store_uri))
        pointer = vi.pointer()
        if pointer is None:
            if required:
                vi.open()  # raises the one-line "no vector index" error
            return None
        cached = self._indexes.get(vi.store.uri)
        if cached is not None and cached.pointer.get("faiss") == pointer.get("faiss"):
            vi.check(entries, pointer=pointer)
            return cached
        loaded = vi.open(entries)
        self._indexes[vi.store.uri] = loaded
        return loaded

    def _span_rows(self, q: QueryFeatures, step: float) -> int:
        from vmr.search.two_stage import TEXT_SPAN_S

        return len(q.features) if q.kind == "video" else max(1, int(round(TEXT_SPAN_S / step)))

    def search_indexed(self, plan: SearchPlan, top_k: int, shortlist: int | None = None,
                       neighbours: int | None = None, index=None) -> SearchResult:
        """The two-stage search of a checked ``plan`` (:mod:`vmr.search.two_stage`): ``shortlist`` spans (default
        ``max(2 * top_k, 10)``) from ``neighbours`` nearest vectors per query row, re-ranked by the model."""
        from vmr.search import two_stage

        index = index or self.index_for(plan.store_uri, required=True, entries=plan.entries or None)
        q = plan.query
        n_spans = int(shortlist or max(2 * top_k, 10))
        k = int(neighbours or two_stage.default_neighbours(n_spans, index.ntotal))
        step = 1.0 / float(index.settings.fps)
        nb = index.search(q.features, k)
        allowed = set(plan.video_ids)
        spans = [sp for sp in two_stage.shortlist(nb, len(q.features), n_spans * 2, self._span_rows(q, step))
                 if sp.video_id in allowed][:n_spans]
        by_video: dict[str, list] = {}
        for sp in spans:
            by_video.setdefault(sp.video_id, []).append(sp)
        hits = self.search_ranges(q, plan.store_uri, by_video, top_k)
        return plan.result(hits, on_ray=False, path="index")

    def search_ranges(self, q: QueryFeatures, store_uri: str, spans: dict[str, list], top_k: int,
                      loaded: dict | None = None) -> list[SearchHit]:
        """Stage 2: the model on crops around ``spans`` ({video id: [two_stage.Span]}; crops as
        :func:`vmr.search.two_stage.crop_ranges`, cut into the model's windows when longer), each video merged as in
        :meth:`search_videos`, the best ``top_k`` over all. ``loaded``: VideoFeatures already read, by video id."""
        from vmr.search.two_stage import crop_ranges

        store = self._store(store_uri)
        per_video: dict[str, list[np.ndarray]] = {}

        def items() -> Iterator[WindowItem]:
            for vid, sps in spans.items():
                vf = (loaded or {}).get(vid) or store.load(vid)
                step = float(vf.step)
                rows, overlap = self._window_rows(step, len(q.features) if q.kind == "video" else 0)
                feats = np.asarray(vf.features, np.float32)
                times = np.asarray(vf.timestamps, np.float64)
                per_video[vid] = []
                n_q = len(q.features) if q.kind == "video" else self._span_rows(q, step)
                for a, b in crop_ranges(sps, len(feats), n_q, step, rows):
                    yield from window_items(vid, feats[a:b], times[a:b], step, rows if rows and b - a > rows else None,
                                            overlap)

        return self._best_hits(q, items(), per_video, top_k)

    def _best_hits(self, q: QueryFeatures, items: Iterable[WindowItem], per_video: dict[str, list[np.ndarray]],
                   top_k: int) -> list[SearchHit]:
        """Run the windows of many videos in shared batches, merge each video's candidates on its own (``per_video``:
        video id -> list, filled here), and keep the best ``top_k`` over all videos."""
        for it, owned, _, _ in self._run(q, items, self._per_window_k(top_k)):
            per_video[it.key].append(owned)
        hits = []
        for vid, cands in per_video.items():
            hits += [SearchHit(vid, float(s), float(e), float(x)) for s, e, x in self._merge(cands, top_k)]
        hits.sort(key=lambda h: -h.score)
        return hits[:top_k]

    def plan_search(self, query: Any = None, corpus: str | None = None, top_k: int = 10, *,
                    text: str | None = None) -> SearchPlan:
        """Check a search's inputs and embed its query once: which videos of ``corpus`` (default ``store_uri``) to
        search and which are skipped (shorter than a video query). :class:`InputError` for an empty store, a
        missing query, a query longer than every video, or features made otherwise than the model's."""
        if top_k < 1:
            raise InputError(f"top-k must be >= 1, got {top_k}")
        if query is None and text is None:
            raise InputError("give either a query clip or a text query (exactly one)")
        corpus = corpus or self.store_uri
        if not corpus:
            raise InputError("no corpus: give the feature store to search (--corpus URI)")
        self._check_task(_query_kind(query, text))
        store = self._store(corpus)
        try:
            entries = store.entries()
        except FileNotFoundError:
            entries = {}
        if not entries:
            raise InputError(f"the feature store {store.uri} is empty: no videos to search (run vmr extract first)")
        settings = store.feature_settings(entries)
        self._check(settings, f"the feature store {store.uri}")
        q = self.query_features(query, text, settings=settings)
        dim = int(next(iter(entries.values())).get("dim") or 0)
        if dim and q.features.shape[1] != dim:
            raise InputError(f"the query has {q.features.shape[1]}-d features, the store {store.uri} {dim}-d")
        hours = sum(float(e.get("duration") or 0.0) for e in entries.values()) / 3600.0
        skipped = [v for v, e in entries.items() if q.kind == "video" and q.duration > float(e.get("duration") or 0) + 1e-6]
        ids = [v for v in entries if v not in set(skipped)]
        if not ids:
            raise InputError(f"the query ({q.duration:.1f} s) is longer than every video of {store.uri}")
        return SearchPlan(q, store.uri, ids, skipped, hours, entries)

    def search_videos(self, q: QueryFeatures, store_uri: str, video_ids: list[str], top_k: int,
                      progress: Callable[[str], None] | None = None) -> list[SearchHit]:
        """The in-process search over ``video_ids`` of a store for a prepared query: windows of consecutive videos
        share batches; each video is merged on its own; the best ``top_k`` over all. (Ray Data actors call this on
        their share of the videos.)"""
        store = self._store(store_uri)
        per_video: dict[str, list[np.ndarray]] = {}
        done = [0]

        def items() -> Iterator[WindowItem]:
            for i, vid in enumerate(video_ids):
                vf = store.load(vid)
                per_video[vid] = []
                yield from self._items_for(vid, vf, q)
                done[0] = i + 1
                if progress and (done[0] % 50 == 0):
                    progress(f"  {done[0]}/{len(video_ids)} videos")

        return self._best_hits(q, items(), per_video, top_k)


@functools.lru_cache(maxsize=4)
def _encoder(model: str, pretrained: str, device: str, seed: int):
    """One CLIP encoder per (model, weights, device, seed) in this process (building one costs seconds)."""
    from vmr.features.clip import ClipEncoder

    return ClipEncoder(model, pretrained, device=device, seed=seed, warn=False)  # Localizer.notices() tells the user


def _in_store(store, target: str) -> bool:
    """True when ``target`` is a video id held by ``store`` (a path or URI never is)."""
    if "://" in target or os.path.isabs(target):
        return False
    try:
        return target in store
    except InputError:  # not a valid video id ("../x.mp4")
        return False


def _exists(uri: str) -> bool:
    try:
        return storage.exists(uri)
    except Exception:  # noqa: BLE001 - _check_video_uri reports why
        return True


def _stored_copy(store, uri: str) -> str | None:
    """The video id under which ``store`` holds features of this very file (same source URI, size and etag; the
    file's stem is tried first, then every manifest entry), or None."""
    from vmr.features.store import video_id_for

    info = storage.info(uri)
    src = storage.normalize(info.uri)

    def same(e: dict | None) -> bool:
        return bool(e) and storage.normalize(str(e.get("source_uri", ""))) == src \
            and int(e.get("source_size", -1)) == int(info.size) and str(e.get("source_etag")) == str(info.etag)

    try:
        stem = video_id_for(info.uri, info.uri)
        first = store.entry(stem)
    except InputError:
        first = None
    if same(first):
        return first["video_id"]
    for vid, e in store.entries().items():
        if same(e):
            return vid
    return None


def _query_kind(query: Any, text: str | None) -> str:
    if text is not None:
        return "text"
    return query.kind if isinstance(query, QueryFeatures) else "video"


def _settings_of(source):
    from vmr.features.settings import FeatureSettings

    return FeatureSettings.of(source)


__all__ = ["Localizer", "Moment", "SearchHit", "SearchResult", "SearchPlan", "Localization", "QueryFeatures", "plan_windows",
           "window_cores", "default_feature_settings", "DEFAULT_WINDOW_S"]
