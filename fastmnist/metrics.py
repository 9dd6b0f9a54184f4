"""Classification metrics from a confusion matrix, in plain NumPy.

Rows of a confusion matrix are the true classes and columns the predicted ones,
so ``confusion[3, 5]`` counts the 3s the model called 5.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import ConfigError, InputError
from .numerics import N_CLASSES


def _class_ids(values: Any, name: str, n_classes: int) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise InputError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        if (
            np.issubdtype(arr.dtype, np.floating)
            and np.isfinite(arr).all()
            and (arr == np.round(arr)).all()
        ):
            arr = arr.astype(np.int64)
        else:
            raise InputError(f"{name} must be integer class ids, got dtype {arr.dtype}")
    if arr.min() < 0 or arr.max() >= n_classes:
        raise InputError(f"{name} must be class ids 0-{n_classes - 1}, got values outside that")
    return arr.astype(np.int64)


def confusion_matrix(y_true: Any, y_pred: Any, n_classes: int = N_CLASSES) -> np.ndarray:
    """Count how often each true class was predicted as each class.

    Parameters
    ----------
    y_true, y_pred : array_like of int
        True and predicted class ids, one-dimensional and the same length.
    n_classes : int
        Number of classes; ids must be in ``0 .. n_classes - 1``.

    Returns
    -------
    ndarray
        ``(n_classes, n_classes)`` int64; ``[i, j]`` counts samples of class ``i``
        predicted as ``j``.
    """
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 1:
        raise ConfigError(f"n_classes must be an integer >= 1, got {n_classes!r}")
    n_classes = int(n_classes)
    t = _class_ids(y_true, "y_true", n_classes)
    p = _class_ids(y_pred, "y_pred", n_classes)
    if len(t) != len(p):
        raise InputError(f"y_true has {len(t)} entries but y_pred has {len(p)}")
    counts = np.bincount(t * n_classes + p, minlength=n_classes * n_classes)
    return counts.reshape(n_classes, n_classes).astype(np.int64)


def _check_confusion(confusion: Any) -> np.ndarray:
    arr = np.asarray(confusion)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] == 0:
        raise InputError(f"a confusion matrix must be square, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise InputError(f"a confusion matrix must hold counts, got dtype {arr.dtype}")
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise InputError("a confusion matrix must hold finite, non-negative counts")
    return arr


def per_class_precision_recall(confusion: Any) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall of every class.

    Parameters
    ----------
    confusion : array_like
        Square matrix, rows true classes, columns predicted ones.

    Returns
    -------
    precision, recall : ndarray
        float64, one value per class. Precision of class ``k`` is the fraction of
        the samples predicted ``k`` that are ``k``; recall the fraction of the
        samples of class ``k`` predicted ``k``. Where the denominator is zero (a
        class never predicted, or absent from the data) the value is NaN, not 0: it
        is undefined, and 0 would read as a measured failure.
    """
    c = _check_confusion(confusion).astype(np.float64)
    hits = np.diag(c)
    predicted = c.sum(axis=0)
    actual = c.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, hits / predicted, np.nan)
        recall = np.where(actual > 0, hits / actual, np.nan)
    return precision, recall


def most_confused_pairs(confusion: Any, k: int = 5) -> list[tuple[int, int, Any]]:
    """The ``k`` most frequent mistakes.

    Parameters
    ----------
    confusion : array_like
        Square matrix, rows true classes, columns predicted ones.
    k : int
        How many pairs to return at most.

    Returns
    -------
    list of (int, int, int)
        ``(true, predicted, count)`` for off-diagonal cells with a non-zero count
        (an int for a matrix of counts, a float for a normalised one), most
        frequent first; ties go to the smaller true class, then the smaller
        predicted one, so the order is deterministic.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ConfigError(f"k must be an integer >= 0, got {k!r}")
    c = _check_confusion(confusion)
    n = c.shape[0]
    true_ids, pred_ids = np.nonzero((c > 0) & ~np.eye(n, dtype=bool))
    counts = c[true_ids, pred_ids]
    # lexsort sorts by its last key first: count descending, then true, then predicted.
    order = np.lexsort((pred_ids, true_ids, -counts))[: int(k)]
    return [(int(true_ids[i]), int(pred_ids[i]), counts[i].item()) for i in order]
