"""Sequence alignment: soft-DTW (differentiable, batched), hard DTW paths."""
from vmr.alignment.cost import cosine_cost
from vmr.alignment.dtw import aligned_span, dtw, dtw_path
from vmr.alignment.soft_dtw import expected_alignment, soft_dtw

__all__ = ["aligned_span", "cosine_cost", "dtw", "dtw_path", "expected_alignment", "soft_dtw"]
