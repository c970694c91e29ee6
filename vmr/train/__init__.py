"""Stage 3 without Ray: the plain PyTorch training loop, evaluation next to the cosine baseline, and run plots.

:mod:`vmr.pipeline.train` runs the same loop inside Ray Train workers.
"""
