"""The NumPy reference backend: gradients against finite differences, and basics."""

from __future__ import annotations

import numpy as np
import pytest

from fastmnist import Model, get_backend
from fastmnist.backends.numpy_backend import crossentropy_forward, softmax_forward
from fastmnist.optim import SGD

from .synthetic import blobs

numpy_backend = get_backend("numpy")


def _assert_matches_finite_differences(model, loss, gw, gb, rng, samples=25) -> None:
    """Central differences of ``loss()`` against the analytic gradients, relative error 1e-6."""
    eps = 1e-6
    for params, analytic in ((model.weights, gw), (model.biases, gb)):
        for p, g in zip(params, analytic):
            flat, gflat = p.reshape(-1), g.reshape(-1)
            # A sample of entries, always including the largest gradients.
            picks = set(rng.choice(flat.size, size=min(flat.size, samples), replace=False))
            picks |= set(np.argsort(-np.abs(gflat))[:5])
            for k in picks:
                old = flat[k]
                flat[k] = old + eps
                up = loss()
                flat[k] = old - eps
                down = loss()
                flat[k] = old
                numeric = (up - down) / (2 * eps)
                scale = max(abs(numeric), abs(gflat[k]), 1e-4)
                assert abs(numeric - gflat[k]) / scale < 1e-6, (k, numeric, gflat[k])


@pytest.mark.parametrize("hidden", [(7,), (6, 5), (5, 4, 3)])
def test_gradients_match_finite_differences(hidden):
    rng = np.random.default_rng(1)
    model = Model.initialize(hidden, dtype="float64", rng=rng)
    for b in model.biases:  # non-zero biases so every bias gradient is exercised
        b[:] = rng.normal(0, 0.1, size=b.shape)
    x = rng.random((5, 784))  # dense floats: every weight gets a gradient
    y = np.array([0, 3, 3, 9, 1], dtype=np.uint8)
    grads = numpy_backend.gradients(model, x, y)
    _assert_matches_finite_differences(
        model, lambda: numpy_backend.gradients(model, x, y).loss, grads.weights, grads.biases, rng
    )


def test_softmax_and_loss_are_stable_for_huge_logits():
    logits = np.array([[1000.0, 0.0, -1000.0] + [0.0] * 7, [-1e4] * 10])
    probs = softmax_forward(logits)
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    loss = crossentropy_forward(logits, np.array([0, 4]))
    assert np.isfinite(loss).all()
    assert loss[0] == pytest.approx(0.0, abs=1e-12)
    assert loss[1] == pytest.approx(np.log(10.0))


def test_predict_proba_rows_sum_to_one_and_accepts_scaled_floats():
    x, _ = blobs(50)
    model = Model.initialize((16,), rng=0)
    p_u8 = numpy_backend.predict_proba(model, x)
    p_float = numpy_backend.predict_proba(model, x.astype(np.float32) / np.float32(255))
    assert p_u8.shape == (50, 10) and p_u8.dtype == np.float32
    np.testing.assert_allclose(p_u8.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(p_u8, p_float, rtol=1e-5, atol=1e-7)


def test_one_epoch_step_matches_manual_sgd():
    """train_epoch with one full batch equals gradients + the SGD rule applied by hand."""
    x, y = blobs(32)
    model = Model.initialize((12,), dtype="float64", rng=3)
    expected = model.copy()
    grads = numpy_backend.gradients(expected, x, y)
    lr, wd = 0.1, 0.01
    for w, g in zip(expected.weights, grads.weights):
        w -= lr * (g + wd * w)
    for b, g in zip(expected.biases, grads.biases):
        b -= lr * g
    opt = SGD(momentum=0.0, weight_decay=wd)
    numpy_backend.train_epoch(model, opt, x, y, np.arange(32), 32, np.array([lr]))
    for got, want in zip(model.parameters(), expected.parameters()):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)


def test_momentum_and_nesterov_follow_the_documented_rule():
    x, y = blobs(20)
    lr, mu = 0.05, 0.9
    for nesterov in (False, True):
        model = Model.initialize((8,), dtype="float64", rng=4)
        expected = model.copy()
        velocity = [np.zeros_like(p) for p in expected.parameters()]
        for _step in range(2):
            g = numpy_backend.gradients(expected, x, y)
            grads = [t for pair in zip(g.weights, g.biases) for t in pair]
            for p, gr, v in zip(expected.parameters(), grads, velocity):
                v[...] = mu * v + gr
                p -= lr * (gr + mu * v if nesterov else v)
        opt = SGD(momentum=mu, nesterov=nesterov)
        order = np.concatenate([np.arange(20), np.arange(20)])
        numpy_backend.train_epoch(model, opt, x, y, order, 20, np.array([lr, lr]))
        for got, want in zip(model.parameters(), expected.parameters()):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-14)


def test_gradients_with_dropout_and_label_smoothing_match_finite_differences():
    from fastmnist.backends.augment import dropout_keep, dropout_threshold
    from fastmnist.backends.numpy_backend import _gradients

    rng = np.random.default_rng(7)
    model = Model.initialize((9, 7), dtype="float64", rng=rng)
    x = rng.random((6, 784))
    y = np.array([1, 1, 4, 0, 9, 2])
    keeps = [dropout_keep(99, np.arange(6), i, w, dropout_threshold(0.3))
             for i, w in enumerate(model.hidden)]
    assert 0 < sum(k.sum() for k in keeps) < sum(k.size for k in keeps)
    scale, smoothing = np.float64(1 / 0.7), 0.1

    def loss() -> float:
        return float(_gradients(model, x, y, keeps, scale, smoothing)[0].mean())

    _, _, gw, gb = _gradients(model, x, y, keeps, scale, smoothing)
    _assert_matches_finite_differences(model, loss, gw, gb, rng)


def test_shifted_images_and_dropout_masks_are_deterministic():
    from fastmnist.backends.augment import dropout_keep, dropout_threshold, shift_images

    x, _ = blobs(4)
    shifts = np.array([[0, 0], [2, -2], [-1, 1], [-2, 2]])
    out = shift_images(x, shifts).reshape(4, 28, 28)
    img = x.reshape(4, 28, 28)
    assert np.array_equal(out[0], img[0])
    assert np.array_equal(out[1, 2:, :26], img[1, :26, 2:]) and not out[1, :2].any()
    assert np.array_equal(out[3, :26, 2:], img[3, 2:, :26])
    a = dropout_keep(5, np.arange(100), 1, 50, dropout_threshold(0.5))
    assert np.array_equal(a, dropout_keep(5, np.arange(100), 1, 50, dropout_threshold(0.5)))
    assert 0.4 < a.mean() < 0.6
    assert not np.array_equal(a, dropout_keep(6, np.arange(100), 1, 50, dropout_threshold(0.5)))
    assert dropout_keep(5, np.arange(10), 0, 10, dropout_threshold(0.0)).all()
