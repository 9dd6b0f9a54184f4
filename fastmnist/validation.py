"""Checks for arrays and hyperparameters that come from callers.

Each check raises the package's own error naming the problem, before any work
starts, and returns the value in the form the backends expect.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import ConfigError, InputError
from .numerics import N_CLASSES, N_PIXELS


def check_images(images: Any, *, name: str = "images") -> np.ndarray:
    """Return images as a C-contiguous ``(n, 784)`` uint8 or float array.

    uint8 pixels are kept as they are; floats must be finite and in [0, 1]
    (already scaled). Read-only and non-contiguous inputs are accepted (copied).
    """
    arr = np.asarray(images)
    if arr.dtype == object or not (
        arr.dtype == np.uint8 or np.issubdtype(arr.dtype, np.floating)
        or np.issubdtype(arr.dtype, np.integer)
    ):
        raise InputError(f"{name} must be uint8 pixels or floats in [0, 1], got dtype {arr.dtype}")
    if arr.ndim == 3 and arr.shape[1:] == (28, 28):
        arr = arr.reshape(len(arr), N_PIXELS)
    if arr.ndim != 2 or arr.shape[1] != N_PIXELS:
        raise InputError(
            f"{name} must have shape (n, 784) or (n, 28, 28), got {arr.shape}"
        )
    if arr.shape[0] == 0:
        raise InputError(f"{name} is empty")
    if np.issubdtype(arr.dtype, np.integer) and arr.dtype != np.uint8:
        if arr.min() < 0 or arr.max() > 255:
            raise InputError(f"integer {name} must be pixels in 0-255")
        arr = arr.astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        if arr.dtype not in (np.float32, np.float64):
            arr = arr.astype(np.float32)
        if not np.isfinite(arr).all():
            raise InputError(f"{name} contain NaN or infinite values")
        if arr.min() < 0.0 or arr.max() > 1.0:
            raise InputError(
                f"float {name} must be scaled to [0, 1] (got values in "
                f"[{arr.min():.3g}, {arr.max():.3g}]); pass uint8 pixels to have them scaled"
            )
    return np.ascontiguousarray(arr)


def check_labels(labels: Any, n: int | None = None, *, name: str = "labels") -> np.ndarray:
    """Return labels as a contiguous uint8 array of digits 0-9."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise InputError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        raise InputError(f"{name} is empty")
    if not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.isfinite(arr).all() and (
            arr == np.round(arr)
        ).all():
            arr = arr.astype(np.int64)
        else:
            raise InputError(f"{name} must be integers 0-9, got dtype {arr.dtype}")
    if arr.min() < 0 or arr.max() >= N_CLASSES:
        raise InputError(f"{name} must be digits 0-{N_CLASSES - 1}, got values outside that range")
    if n is not None and len(arr) != n:
        raise InputError(f"{name} has {len(arr)} entries but there are {n} images")
    return np.ascontiguousarray(arr, dtype=np.uint8)


def check_positive_int(value: Any, name: str, *, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be at most {maximum}, got {value!r}")
    return int(value)


def check_learning_rate(value: Any, name: str = "learning rate") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ConfigError(f"{name} must be a number > 0, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_threads(value: Any) -> int | None:
    """``None`` (use the backend's default) or a thread count this machine allows."""
    if value is None:
        return None
    import os

    limit = os.cpu_count() or 1
    try:  # numba's ceiling, fixed at its import, is the binding one when present
        import numba

        limit = numba.config.NUMBA_NUM_THREADS
    except ImportError:
        pass
    return check_positive_int(value, "threads", maximum=limit)
