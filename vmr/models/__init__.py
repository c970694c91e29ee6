"""Moment-retrieval models. Plain PyTorch; no Ray, no MLflow.

Every model follows one interface, so training, evaluation and inference treat them alike:

``forward(batch) -> dict[str, Tensor]``
    ``batch`` is the padded layout of :func:`vmr.data.samples.collate`.
``loss(out, batch) -> dict[str, Tensor]``
    scalar tensors, one per loss term, plus ``"total"`` (the weighted sum that is back-propagated).
``predict(out, batch, top_k=5) -> list[np.ndarray]``
    one array per batch item of shape (K, 3): ``[start_s, end_s, score]`` in *seconds* on the item's
    ``target_times`` clock, best first, after NMS.

Each model class has a config dataclass next to it and a ``kind`` string (``"matr"``, ``"a2fa"``).
"""
