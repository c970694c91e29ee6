"""User-facing errors.

Raise :class:`VmrError` (or a subclass) for a mistake the user can fix: a missing file, a bad option, an empty store.
The CLI prints its message on one line and exits non-zero, without a traceback. Bugs stay ordinary exceptions.
"""


class VmrError(Exception):
    """A user-facing error with a one-line message."""


class InputError(VmrError):
    """Bad input data: a missing or unreadable file, a malformed annotation, an unsupported format."""


class ConfigError(VmrError):
    """A bad configuration value or override."""
