"""Confusion matrix, precision/recall and most-confused pairs on hand-made examples."""

from __future__ import annotations

import numpy as np
import pytest

from fastmnist.errors import ConfigError, InputError
from fastmnist.metrics import confusion_matrix, most_confused_pairs, per_class_precision_recall


def test_confusion_matrix_counts_rows_true_columns_predicted():
    cm = confusion_matrix([0, 1, 2, 2, 1, 0], [0, 2, 2, 2, 1, 1], n_classes=3)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 1], [0, 0, 2]])


def test_confusion_matrix_defaults_to_ten_classes_and_accepts_uint8():
    y = np.array([9, 0, 9, 3], dtype=np.uint8)
    p = np.array([9, 0, 4, 3], dtype=np.uint8)
    cm = confusion_matrix(y, p)
    assert cm.shape == (10, 10)
    assert cm.sum() == 4
    assert cm[9, 4] == 1 and cm[9, 9] == 1 and cm[0, 0] == 1 and cm[3, 3] == 1


def test_confusion_matrix_accepts_integral_floats_and_empty_input():
    np.testing.assert_array_equal(
        confusion_matrix([1.0, 0.0], [1.0, 1.0], n_classes=2), [[0, 1], [0, 1]]
    )
    np.testing.assert_array_equal(confusion_matrix([], [], n_classes=2), np.zeros((2, 2)))


@pytest.mark.parametrize(
    "y_true, y_pred, match",
    [
        ([0, 1], [0], "entries"),
        ([0, 10], [0, 1], "0-9"),
        ([0, -1], [0, 1], "0-9"),
        ([[0, 1]], [[0, 1]], "one-dimensional"),
        ([0.5, 1.0], [0, 1], "integer"),
        (["a", "b"], [0, 1], "integer"),
    ],
)
def test_confusion_matrix_rejects_bad_labels(y_true, y_pred, match):
    with pytest.raises(InputError, match=match):
        confusion_matrix(y_true, y_pred)


def test_confusion_matrix_rejects_bad_class_count():
    with pytest.raises(ConfigError):
        confusion_matrix([0], [0], n_classes=0)


def test_confusion_matrix_matches_scikit_learn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    y, p = rng.integers(0, 10, 500), rng.integers(0, 10, 500)
    np.testing.assert_array_equal(
        confusion_matrix(y, p), sk.confusion_matrix(y, p, labels=range(10))
    )


def test_precision_recall_exact_values_and_nan_when_undefined():
    cm = np.array([[5, 1, 0], [2, 3, 0], [0, 0, 0]])
    precision, recall = per_class_precision_recall(cm)
    # Class 2 is neither present nor predicted: both are undefined, not zero.
    np.testing.assert_allclose(precision, [5 / 7, 3 / 4, np.nan])
    np.testing.assert_allclose(recall, [5 / 6, 3 / 5, np.nan])
    assert precision.dtype == np.float64 and recall.dtype == np.float64


def test_precision_recall_of_a_perfect_classifier():
    precision, recall = per_class_precision_recall(np.diag([3, 4, 5]))
    np.testing.assert_array_equal(precision, [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(recall, [1.0, 1.0, 1.0])


def test_precision_recall_match_scikit_learn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(4)
    y, p = rng.integers(0, 10, 400), rng.integers(0, 10, 400)
    precision, recall = per_class_precision_recall(confusion_matrix(y, p))
    np.testing.assert_allclose(precision, sk.precision_score(y, p, average=None))
    np.testing.assert_allclose(recall, sk.recall_score(y, p, average=None))


@pytest.mark.parametrize(
    "bad", [np.zeros((2, 3)), np.zeros(4), np.array([[1, -1], [0, 2]]), np.array([[np.nan]])]
)
def test_matrix_functions_reject_non_confusion_matrices(bad):
    with pytest.raises(InputError):
        per_class_precision_recall(bad)
    with pytest.raises(InputError):
        most_confused_pairs(bad)


def test_most_confused_pairs_sorted_by_count_then_class():
    cm = np.array(
        [
            [50, 4, 0],
            [7, 40, 4],
            [0, 9, 30],
        ]
    )
    assert most_confused_pairs(cm) == [(2, 1, 9), (1, 0, 7), (0, 1, 4), (1, 2, 4)]
    assert most_confused_pairs(cm, k=2) == [(2, 1, 9), (1, 0, 7)]
    assert most_confused_pairs(cm, k=0) == []
    assert all(type(c) is int for _, _, c in most_confused_pairs(cm))


def test_most_confused_pairs_ignores_the_diagonal_and_zeros():
    assert most_confused_pairs(np.diag([5, 6, 7])) == []


def test_most_confused_pairs_keeps_fractions_of_a_normalised_matrix():
    pairs = most_confused_pairs(np.array([[0.9, 0.1], [0.25, 0.75]]))
    assert pairs == [(1, 0, 0.25), (0, 1, 0.1)]


def test_most_confused_pairs_rejects_bad_k():
    with pytest.raises(ConfigError):
        most_confused_pairs(np.eye(2, dtype=int), k=-1)
