"""vmr: find moments in videos from a video clip (MATR) or a sentence (A2FA+F2SGD).

The library (this package, without ``vmr.pipeline``) is plain NumPy/PyTorch and never imports Ray or MLflow.
"""
__version__ = "0.1.0"

_LAZY = {"Localizer": "vmr.search.localizer", "Moment": "vmr.search.localizer", "SearchHit": "vmr.search.localizer"}


def __getattr__(name: str):
    """``vmr.Localizer`` (and its result types) without importing torch at ``import vmr``."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vmr' has no attribute {name!r}")
