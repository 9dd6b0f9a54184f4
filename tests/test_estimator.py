"""The scikit-learn-style estimator, with and inside scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest

from fastmnist import InputError, MLPClassifier
from fastmnist.estimator import NotFittedError

from .synthetic import blobs

X, Y = blobs(600, seed=0)
X_TEST, Y_TEST = blobs(200, seed=1)
SMALL = dict(hidden_layer_sizes=(32,), max_iter=3, backend="numpy", random_state=0)


def test_fit_predict_score_and_fitted_attributes():
    clf = MLPClassifier(**SMALL).fit(X, Y)
    assert clf.score(X_TEST, Y_TEST) > 0.9
    assert list(clf.classes_) == list(range(10))
    assert clf.n_iter_ == 3 and len(clf.loss_curve_) == 3
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]
    assert [w.shape for w in clf.coefs_] == [(784, 32), (32, 10)]
    assert [b.shape for b in clf.intercepts_] == [(32,), (10,)]
    assert clf.n_features_in_ == 784
    proba = clf.predict_proba(X_TEST)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(clf.predict(X_TEST), proba.argmax(axis=1))


def test_any_label_values_are_mapped_through_classes():
    names = np.array(list("abcdefghij"))
    clf = MLPClassifier(**SMALL).fit(X, names[Y])
    assert list(clf.classes_) == list("abcdefghij")
    assert set(clf.predict(X_TEST)) <= set("abcdefghij")
    assert clf.score(X_TEST, names[Y_TEST]) > 0.9
    with pytest.raises(InputError, match="not in classes_"):
        clf.partial_fit(X[:10], np.array(["z"] * 10))


def test_scaled_float_input_matches_uint8_input():
    a = MLPClassifier(**SMALL).fit(X, Y)
    b = MLPClassifier(**SMALL).fit(X.astype(np.float64) / 255.0, Y)
    for wa, wb in zip(a.coefs_, b.coefs_):
        np.testing.assert_array_equal(wa, wb)
    np.testing.assert_allclose(
        a.predict_proba(X_TEST), b.predict_proba(X_TEST.astype(np.float32) / 255), atol=1e-6
    )


def test_partial_fit_needs_classes_then_learns():
    clf = MLPClassifier(**SMALL)
    with pytest.raises(InputError, match="classes="):
        clf.partial_fit(X, Y)
    clf.partial_fit(X[:300], Y[:300], classes=np.arange(10))
    clf.partial_fit(X[300:], Y[300:])
    assert clf.n_iter_ == 2 and clf.score(X_TEST, Y_TEST) > 0.8


def test_unfitted_and_bad_inputs():
    with pytest.raises(NotFittedError):
        MLPClassifier().predict(X_TEST)
    with pytest.raises(InputError, match="784"):
        MLPClassifier(**SMALL).fit(np.zeros((10, 100)), np.arange(10))
    with pytest.raises(InputError, match="at most 10 classes"):
        MLPClassifier(**SMALL).fit(X[:20], np.arange(20))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        MLPClassifier(**SMALL).fit(X.astype(np.float32), Y)


def test_same_random_state_same_model():
    a, b = MLPClassifier(**SMALL).fit(X, Y), MLPClassifier(**SMALL).fit(X, Y)
    for wa, wb in zip(a.coefs_, b.coefs_):
        np.testing.assert_array_equal(wa, wb)


sklearn = pytest.importorskip("sklearn")


def test_get_set_params_and_clone():
    from sklearn.base import clone

    clf = MLPClassifier(**SMALL)
    assert clf.get_params()["hidden_layer_sizes"] == (32,)
    clf.set_params(max_iter=1)
    assert clone(clf).get_params() == clf.get_params()
    with pytest.raises(ValueError):
        clf.set_params(bogus=1)


def test_pipeline_and_cross_val_score():
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    pipe = Pipeline([
        ("scale", FunctionTransformer(lambda x: x / 255.0)),
        ("mlp", MLPClassifier(**SMALL)),
    ])
    scores = cross_val_score(pipe, X, Y, cv=3)
    assert len(scores) == 3 and min(scores) > 0.85


@pytest.mark.parametrize(
    "check",
    [
        "check_no_attributes_set_in_init",
        "check_parameters_default_constructible",
        "check_get_params_invariance",
        "check_set_params",
        "check_estimators_unfitted",
        "check_estimator_repr",
    ],
)
def test_sklearn_estimator_checks_that_apply(check):
    """The checks that do not fit on scikit-learn's own tiny-feature data sets.

    The others feed arrays with a handful of features, which a 784-input network
    rightly refuses.
    """
    from sklearn.utils import estimator_checks

    fn = getattr(estimator_checks, check, None)
    if fn is None:
        pytest.skip(f"{check} is not in this scikit-learn")
    fn(type(MLPClassifier()).__name__, MLPClassifier(**SMALL))
