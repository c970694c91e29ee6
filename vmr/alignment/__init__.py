"""Sequence alignment: soft-DTW (differentiable, batched), hard DTW paths."""
