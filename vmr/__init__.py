"""vmr: find moments in videos from a video clip (MATR) or a sentence (A2FA+F2SGD).

The library (this package, without ``vmr.pipeline``) is plain NumPy/PyTorch and never imports Ray or MLflow.
"""
__version__ = "0.1.0"
