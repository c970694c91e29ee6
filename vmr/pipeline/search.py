"""Search a large feature store with Ray Data: the store's video ids are split into batches of ``videos_per_batch``;
an actor pool (each actor holds the model once, on a GPU when the cluster has them) runs
:meth:`vmr.search.localizer.Localizer.search_videos` on each batch (windows of the batch's videos packed into shared forward
passes, merged per video) and returns that batch's best ``top_k`` moments; the driver keeps the best ``top_k`` of all.

The model travels to the actors through Ray's object store (one copy per node), so an MLflow or S3 model is fetched
once, by the driver, and actors need no credentials for it; they read the features from the store themselves (the
AWS_* variables of the driver are forwarded). The query is embedded once on the driver.

Resources: one CPU (or ``num_gpus`` = 1 with GPUs in the cluster) per actor, up to one actor per GPU or per two CPUs
(``max_actors``); each CPU actor runs torch on ``cpus_per_actor`` threads. :func:`search_store` (the ``vmr search``
command) chooses this path for stores of at least ``RAY_SEARCH_MIN_HOURS`` hours, the in-process
:meth:`~vmr.search.localizer.Localizer.search_videos` otherwise.
"""
from __future__ import annotations

import importlib.util
import logging
from typing import Any, Callable

import numpy as np

from vmr.search.localizer import Localizer, QueryFeatures, SearchHit, SearchResult

log = logging.getLogger(__name__)

# Ray Data pays a start-up of ~20 s (a local cluster, actors receiving the model) and helps only when it spreads the
# windows over more CPUs/GPUs than one process uses. 50 h of footage is ~15 min of in-process work on a 2-core CPU
# (3.4 target-minutes/s, benchmarks/localize.py, see benchmarks/RESULTS.md), where the start-up is ~2%.
RAY_SEARCH_MIN_HOURS = 50.0


def search_store(localizer: Localizer, query: Any = None, corpus: str | None = None, top_k: int = 10, *,
                 text: str | None = None, use_ray: bool | None = None, exact: bool | None = None,
                 progress: Callable[[str], None] | None = None) -> SearchResult:
    """The ``top_k`` best moments of a query over a whole feature store, best first. Through the store's vector
    index in this process (two stages, :mod:`vmr.search.two_stage`) when it has one, unless ``exact`` is True
    (``exact=False`` insists on it); otherwise every window of every video: on Ray Data when ``use_ray`` is True, or
    when it is None and the store holds at least ``RAY_SEARCH_MIN_HOURS`` hours (and Ray is installed), in this
    process otherwise. Inputs as :meth:`Localizer.search_details`."""
    plan = localizer.plan_search(query, corpus, top_k, text=text)
    indexed = localizer.search_planned_with_index(plan, top_k, exact=exact, progress=progress)
    if indexed is not None:
        return indexed
    if use_ray is None:
        use_ray = plan.hours >= RAY_SEARCH_MIN_HOURS and importlib.util.find_spec("ray") is not None
    if progress:
        progress(plan.describe(localizer.kind, " on Ray Data" if use_ray else ""))
    if use_ray:
        hits = search_with_ray(localizer, plan.query, plan.store_uri, plan.video_ids, top_k, progress=progress)
    else:
        hits = localizer.search_videos(plan.query, plan.store_uri, plan.video_ids, top_k, progress=progress)
    return plan.result(hits, on_ray=bool(use_ray))


class SearchActor:
    """Ray Data actor: a :class:`Localizer` around the shared model; ``{"video_id": [...]}`` batches in, rows of
    ``video_id, start, end, score`` (that batch's best ``top_k``) out."""

    def __init__(self, model_ref, card, features, store_uri: str, query: QueryFeatures, top_k: int,
                 window_s, overlap_s, batch_windows: int, window_top_k, device: str, threads: int):
        import ray
        import torch

        if device == "cpu":
            torch.set_num_threads(max(1, threads))
        model = ray.get(model_ref) if isinstance(model_ref, ray.ObjectRef) else model_ref
        self.localizer = Localizer(model, store_uri, device=device, window_s=window_s, overlap_s=overlap_s, card=card,
                                   features=features, batch_windows=batch_windows, window_top_k=window_top_k)
        self.store_uri, self.query, self.top_k = store_uri, query, top_k

    def __call__(self, batch: dict) -> dict:
        ids = [str(v) for v in batch["video_id"]]
        hits = self.localizer.search_videos(self.query, self.store_uri, ids, self.top_k)
        return {
            "video_id": np.array([h.video_id for h in hits], dtype=object),
            "start": np.array([h.start for h in hits], dtype=np.float64),
            "end": np.array([h.end for h in hits], dtype=np.float64),
            "score": np.array([h.score for h in hits], dtype=np.float64),
        }


def search_with_ray(localizer: Localizer, query: QueryFeatures, store_uri: str, video_ids: list[str], top_k: int,
                    *, videos_per_batch: int = 16, max_actors: int | None = None, cpus_per_actor: float = 1.0,
                    num_gpus: float | None = None, progress: Callable[[str], None] | None = None) -> list[SearchHit]:
    """The best ``top_k`` moments of ``query`` over ``video_ids`` of the store, computed on Ray Data (module doc).
    Connects to the running Ray session, the cluster in RAY_ADDRESS, or starts a local one."""
    import ray
    from ray.data import ActorPoolStrategy

    from vmr.pipeline.ray_session import ensure_ray, forwarded_env

    ensure_ray()
    resources = ray.cluster_resources()
    gpus, cpus = float(resources.get("GPU", 0)), float(resources.get("CPU", 1))
    num_gpus = num_gpus if num_gpus is not None else (1.0 if gpus > 0 else 0.0)
    device = "cuda" if num_gpus > 0 else "cpu"
    if max_actors is None:
        max_actors = max(1, int(gpus // num_gpus)) if device == "cuda" else max(1, int(cpus // (2 * cpus_per_actor)))
    n_batches = max(1, -(-len(video_ids) // videos_per_batch))
    max_actors = min(max_actors, n_batches)
    env = forwarded_env()
    remote = {"runtime_env": {"env_vars": env}} if env else {}

    model_ref = ray.put(localizer.model.to("cpu"))
    try:
        ds = ray.data.from_items([{"video_id": v} for v in video_ids], override_num_blocks=n_batches)
        ds = ds.map_batches(
            SearchActor, batch_size=videos_per_batch, batch_format="numpy",
            fn_constructor_kwargs=dict(
                model_ref=model_ref, card=localizer.card, features=localizer.features, store_uri=store_uri,
                query=query, top_k=top_k, window_s=localizer.window_s, overlap_s=localizer.overlap_s,
                batch_windows=localizer.batch_windows, window_top_k=localizer.window_top_k, device=device,
                threads=int(max(1, round(cpus_per_actor)))),
            compute=ActorPoolStrategy(min_size=1, max_size=max_actors),
            num_cpus=cpus_per_actor, num_gpus=num_gpus, **remote,
        )
        if progress:
            progress(f"Ray Data: {len(video_ids)} videos in {n_batches} batches, up to {max_actors} actors on {device}")
        hits = []
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            hits += [SearchHit(str(v), float(s), float(e), float(x))
                     for v, s, e, x in zip(batch["video_id"], batch["start"], batch["end"], batch["score"])]
    finally:
        localizer.model.to(localizer.device)
    hits.sort(key=lambda h: -h.score)
    return hits[:top_k]


__all__ = ["RAY_SEARCH_MIN_HOURS", "SearchActor", "search_store", "search_with_ray"]
