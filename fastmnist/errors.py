"""The package's own exception types.

Every error a user can cause is one of these, raised at the boundary before any
work starts; the command line turns them into a single ``error:`` line.
"""

from __future__ import annotations


class FastMnistError(Exception):
    """Base class of every error fastmnist raises on purpose."""


class ConfigError(FastMnistError, ValueError):
    """A hyperparameter, name or argument is not acceptable."""


class InputError(FastMnistError, ValueError):
    """An array passed by the caller has the wrong shape, dtype or values."""


class DataError(FastMnistError, ValueError):
    """A data file is missing, malformed, truncated or fails its checksum."""


class DataNotFoundError(DataError):
    """The dataset files are not on disk and could not be downloaded."""


class ModelFileError(FastMnistError, ValueError):
    """A file is not a valid fastmnist model."""


class BackendUnavailableError(FastMnistError):
    """The requested backend exists but its package is not installed."""


class DivergenceError(FastMnistError, FloatingPointError):
    """Training produced a non-finite loss or weights."""
