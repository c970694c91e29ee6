"""Evaluation metrics (plain NumPy)."""
