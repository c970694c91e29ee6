"""Every error class of vmr, user-facing or not.

Raise :class:`VmrError` (or a subclass) for a mistake the user can fix: a missing file, a bad option, an empty store.
The CLI prints its message on one line and exits non-zero, without a traceback. Bugs stay ordinary exceptions.
:class:`RowError` is internal: an annotation loader raises it for one row and records it with the row's line.
"""


class VmrError(Exception):
    """A user-facing error with a one-line message."""


class InputError(VmrError):
    """Bad input data: a missing or unreadable file, a malformed annotation, an unsupported format."""


class ConfigError(VmrError):
    """A bad configuration value or override."""


class DecodeError(InputError):
    """A file that cannot be turned into sampled frames. ``.reason`` is short, stable text for the failures table:
    "not found", "empty file", "not a video", "truncated", "unsupported codec", "no video stream",
    "shorter than one sample". The message adds the details (path, codec, decoder error)."""

    def __init__(self, path: str, reason: str, detail: str = ""):
        self.path = path
        self.reason = reason
        self.detail = detail
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))


class FeatureMismatchError(VmrError):
    """A model was asked to run on features made with other settings than the ones it was trained on."""


class TrainingError(VmrError):
    """Training stopped (worker failures beyond ``trainer.max_failures``, a non-finite loss, ...)."""


class SweepFailed(VmrError):
    """No trial of the sweep reported the metric."""


class ServiceUnavailable(VmrError):
    """A service vmr needs cannot be reached right now (the object store endpoint, the MLflow server, the model hub):
    not the user's input, so the CLI exits 1 (retryable) instead of 2, with one line naming the service."""


class RowError(ValueError):
    """A problem with one row; the loader records it with the row's line."""
